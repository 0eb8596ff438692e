"""Command line: `serve` (default), `migrate`, `create-user NAME`.

Every flag mirrors a `CHAT_*` variable and simply overrides it, so the
environment and the command line go through the same parser (config.py).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys

from .app import create_app
from .auth import USERNAME, USERNAME_RULE, PasswordHasher
from .config import SETTINGS, Config, ConfigError
from .db import Database
from .engines import UniqueViolation
from .observability import serve, setup_logging


def _flag(variable: str) -> str:
    return "--" + variable.removeprefix("CHAT_").lower().replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="chat_server: self-hosted real-time chat. Flags override CHAT_* variables.",
    )
    for setting in SETTINGS:
        default = f" (default {setting.default})" if setting.default else ""
        parser.add_argument(
            _flag(setting.variable),
            dest=setting.variable,
            metavar=setting.variable.removeprefix("CHAT_"),
            help=f"{setting.help}{default}; env {setting.variable}",
        )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the server (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    create = commands.add_parser("create-user", help="create an account from the shell")
    create.add_argument("username")
    create.add_argument("--display-name", default=None)
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {
        s.variable: getattr(args, s.variable)
        for s in SETTINGS
        if getattr(args, s.variable) is not None
    }
    try:
        config = Config.from_env({**os.environ, **overrides})
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging(config.log_format, config.log_level)
    if args.command == "migrate":
        asyncio.run(_migrate(config))
        return 0
    if args.command == "create-user":
        return asyncio.run(_create_user(config, args))
    try:
        app = create_app(config)
    except ConfigError as exc:
        parser.error(str(exc))
    # Not web.run_app: its runner answers unparsable requests in text/plain.
    serve(app, host=config.host, port=config.port, announce=_announce, loop=_event_loop())
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (the `bench` extra has it): a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _announce(text: str) -> None:
    """aiohttp's start-up banner, as a log line (so JSON logs stay JSON)."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("("):
            logging.getLogger("chat_server").info(line.strip("= ").replace("Running", "serving"))


async def _migrate(config: Config) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database.open(config.resolved_database_url)
    await db.close()
    print("migrations applied")


async def _create_user(config: Config, args: argparse.Namespace) -> int:
    if not USERNAME.fullmatch(args.username):
        print(f"username: {USERNAME_RULE}", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    if not 8 <= len(password) <= 1024:
        print("password: 8-1024 characters", file=sys.stderr)
        return 2
    config.data_dir.mkdir(parents=True, exist_ok=True)
    hasher = PasswordHasher(config.bcrypt_rounds)
    db = await Database.open(config.resolved_database_url)
    try:
        username = args.username.lower()
        user = await db.create_user(
            username, args.display_name or username, await hasher.hash(password)
        )
    except UniqueViolation:
        print(f"username {args.username!r} is taken", file=sys.stderr)
        return 1
    finally:
        await db.close()
        hasher.close()
    print(f"created user {user.username} (id {user.id})")
    return 0
