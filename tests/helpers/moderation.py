"""Moderation helpers: server admins made directly in the database, and the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from chat_server import keys

from . import Account


async def make_admin(client: TestClient, account: Account) -> None:
    """Makes the account a server admin (the flag is read on each request)."""
    await client.app[keys.DB].engine.write(
        "UPDATE users SET is_admin = TRUE WHERE id = $1", account.id
    )


async def audit_actions(client: TestClient) -> list[tuple[str, Any]]:
    """(action, target_id) of every audit entry, oldest first."""
    entries = await client.app[keys.DB].audit_page(2**63 - 1, 1000)
    return [(entry.action, entry.target_id) for entry in reversed(entries)]
