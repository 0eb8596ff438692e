"""Who is online, on this process and (as the relay reports) on the others."""

from __future__ import annotations

import time
from collections.abc import Iterable


class Presence:
    """Who is online, here and (as the relay reports) on other processes.

    Each method returns whether the change is visible: a user online on two
    processes is online once, and offline only when the last one lets go.
    """

    def __init__(self) -> None:
        self.local: set[int] = set()
        self.remote: dict[str, dict[int, list[int]]] = {}  # node -> user -> rooms
        self.heard_from: dict[str, float] = {}

    def online_anywhere(self, user_id: int) -> bool:
        return user_id in self.local or any(user_id in users for users in self.remote.values())

    def local_online(self, user_id: int) -> bool:
        changed = not self.online_anywhere(user_id)
        self.local.add(user_id)
        return changed

    def local_offline(self, user_id: int) -> bool:
        self.local.discard(user_id)
        return not self.online_anywhere(user_id)

    def remote_change(self, node: str, user_id: int, status: str, rooms: list[int]) -> bool:
        self.heard_from[node] = time.time()
        was_online = self.online_anywhere(user_id)
        users = self.remote.setdefault(node, {})
        if status == "online":
            users[user_id] = rooms
        else:
            users.pop(user_id, None)
        return was_online != self.online_anywhere(user_id)

    def remote_alive(
        self, node: str, users: dict[int, list[int]], now: float
    ) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
        """A process's full list of online users; returns those newly online and
        those now offline (their `offline` was missed, e.g. while Redis was away)."""
        self.heard_from[node] = now
        appeared = [(u, r) for u, r in users.items() if not self.online_anywhere(u)]
        before = self.remote.get(node, {})
        self.remote[node] = users
        vanished = [
            (u, r) for u, r in before.items() if u not in users and not self.online_anywhere(u)
        ]
        return appeared, vanished

    def expire(self, silent_since: float) -> list[tuple[int, list[int]]]:
        """Forget processes not heard from since then; returns users now offline."""
        gone = []
        for node in [n for n, t in self.heard_from.items() if t < silent_since]:
            del self.heard_from[node]
            users = self.remote.pop(node, {})
            gone += [(u, r) for u, r in users.items() if not self.online_anywhere(u)]
        return gone

    def remote_users_in(self, rooms: Iterable[int]) -> set[int]:
        wanted = set(rooms)
        return {
            user_id
            for users in self.remote.values()
            for user_id, user_rooms in users.items()
            if wanted.intersection(user_rooms)
        }
