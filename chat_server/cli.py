"""Command line: `serve` (default), `migrate`, `create-user NAME [--admin]`.

Every flag mirrors a `CHAT_*` variable (config.SETTINGS) and may come before or
after the command. Anything a user can get wrong (a setting, the database, the
port, the data dir, the password prompt) ends in one line on stderr that names
the cause and what to do, and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import resource
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from . import __version__, keys
from .app import create_app
from .auth import USERNAME, USERNAME_RULE, PasswordHasher, create_account
from .config import SETTINGS, Config, ConfigError, mask_password
from .db import Database
from .errors import Conflict
from .models import User
from .observability import serve, setup_logging
from .registration import SetupLink, discard_setup_file

log = logging.getLogger("chat_server")
# File descriptors kept for other uses than client sockets (database, files, listeners).
RESERVED_FDS = 64
# Exit status of a command cancelled with Ctrl-C (128 + SIGINT).
CANCELLED = 130


class CommandError(Exception):
    """A problem the user can fix (settings, services, input); the message says what and how."""


def build_parser() -> argparse.ArgumentParser:
    settings = argparse.ArgumentParser(add_help=False)
    for spec in SETTINGS:
        default = spec.default_text.replace("`", "")
        settings.add_argument(
            spec.flag,
            dest=spec.name,
            metavar=spec.name.upper(),
            # Unset flags stay off the namespace, so a flag given before the
            # command is not reset by the command's copy of it.
            default=argparse.SUPPRESS,
            help=f"{spec.help.replace('`', '')} (default {default}; env {spec.variable})".replace(
                "%", "%%"
            ),
        )
    parser = argparse.ArgumentParser(
        prog="run.py",
        parents=[settings],
        description="chat_server: self-hosted real-time chat. Flags override CHAT_* variables"
        " and may come before or after the command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", parents=[settings], help="run the server (the default)")
    commands.add_parser(
        "migrate", parents=[settings], help="apply pending database migrations and exit"
    )
    create = commands.add_parser(
        "create-user", parents=[settings], help="create an account from the shell"
    )
    create.add_argument("username")
    create.add_argument("--display-name", default=None)
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.add_argument(
        "--admin",
        action="store_true",
        help="make a server admin (the first one ends the setup link)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {spec.name: getattr(args, spec.name) for spec in SETTINGS if hasattr(args, spec.name)}
    try:
        config = Config.from_env(flags=flags)
    except ConfigError as exc:
        return _fail(f"{exc} (`python run.py --help` lists the settings)", status=2)
    setup_logging(config.log_format, config.log_level)
    names = _NameOf(flags, os.environ)
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(config, names))
            print("migrations applied")
            return 0
        if args.command == "create-user":
            return _create_user(config, names, args)
        return _serve(config, names)
    except (CommandError, ConfigError) as exc:
        return _fail(str(exc))


def _fail(message: str, status: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


class _NameOf:
    """How the user gave a setting: the flag or variable they used, else both."""

    def __init__(self, flags: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self.flags, self.environ = flags, environ

    def __call__(self, name: str) -> str:
        spec = next(s for s in SETTINGS if s.name == name)
        if name in self.flags:
            return spec.flag
        if self.environ.get(spec.variable):
            return spec.variable
        return f"{spec.flag} or {spec.variable}"


# --- start-up checks ---------------------------------------------------------------------


def _writable_dir(path: Path, name: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except (FileExistsError, NotADirectoryError):
        raise CommandError(f"{path} is not a directory: set {name} to a directory") from None
    except OSError as exc:
        raise CommandError(
            f"cannot write to {path} ({exc.strerror}): make it writable by this user"
            f" or set {name} to another directory"
        ) from None


def _prepare_dirs(config: Config, names: _NameOf) -> None:
    _writable_dir(config.data_dir, names("data_dir"))
    if config.media_dir is not None:
        _writable_dir(config.media_dir, names("media_dir"))


async def _open_database(config: Config, names: _NameOf) -> Database:
    url = config.resolved_database_url
    try:
        return await Database.open(url)
    except Exception as exc:  # the drivers' own errors: unreachable, missing, refused
        log.debug("opening the database failed", exc_info=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        hint = (
            "check that PostgreSQL is running and the database exists (createdb NAME)"
            if url.startswith("postgres")
            else "check that its directory exists and is writable"
        )
        raise CommandError(
            f"cannot open the database {mask_password(url)} ({reason or type(exc).__name__}):"
            f" {hint}, or set {names('database_url')}"
        ) from None


async def _migrate(config: Config, names: _NameOf) -> None:
    _prepare_dirs(config, names)
    db = await _open_database(config, names)
    await db.close()


def raise_open_file_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE raised to the hard limit: each connection holds a descriptor,
    and the usual soft limit of 1,024 caps a server far below what it can carry.
    Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. an unlimited hard limit the kernel refuses
            return soft, soft
    return soft, hard


# --- serve -----------------------------------------------------------------------------


def _serve(config: Config, names: _NameOf) -> int:
    # Directories and database first, on their own: what is wrong with them is
    # said in one line before the app (which opens them again) starts.
    asyncio.run(_migrate(config, names))
    files = raise_open_file_limit()
    app = create_app(config)
    try:
        # Not web.run_app: its runner answers unparsable requests in text/plain.
        serve(
            app,
            host=config.host,
            port=config.port,
            announce=lambda _: _banner(config, files, app[keys.SETUP]),
            loop=_event_loop(),
        )
    except OSError as exc:
        if not isinstance(exc, socket.gaierror) and exc.errno not in (
            errno.EADDRINUSE,
            errno.EADDRNOTAVAIL,
            errno.EACCES,
        ):
            raise
        reason = (exc.strerror or str(exc)).rpartition(": ")[2]
        hint = (
            f"stop the other server or set {names('port')} to a free port"
            if exc.errno == errno.EADDRINUSE
            else f"set {names('port')} to a port above 1023"
            if exc.errno == errno.EACCES
            else f"set {names('host')} to an address of this machine"
        )
        raise CommandError(
            f"cannot listen on {config.host}:{config.port} ({reason}): {hint}"
        ) from None
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (the `bench` extra has it): a faster event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _banner(config: Config, files: tuple[int, int], setup: SetupLink) -> None:
    """Once listening: where to go, where the data is, what it talks to, and while
    no admin exists how to make one (as log lines, so JSON logs stay JSON;
    passwords masked; the setup link is printed on purpose: it is how the
    operator gets in, and it works once)."""
    before, after = files
    raised = f", raised from {before:,}" if after != before else ""
    media = config.resolved_media_dir.resolve()
    lines = [
        f"chat_server {__version__} serving: open {config.resolved_public_url}",
        f"data: {config.data_dir.resolve()} (media: {media})",
        f"database: {mask_password(config.resolved_database_url)}",
        f"redis: {mask_password(config.redis_url)}"
        if config.redis_url
        else "redis: none (a single process)",
        f"sockets: room for about {max(after - RESERVED_FDS, 0):,}"
        f" (open-file limit {after:,}{raised})",
    ]
    first_admin = setup.banner(config.resolved_public_url)
    if first_admin is not None:
        lines.insert(-1, first_admin)  # "sockets:" stays the last line
    for line in lines:
        log.info(line)


# --- create-user -----------------------------------------------------------------------


def _create_user(config: Config, names: _NameOf, args: argparse.Namespace) -> int:
    if not USERNAME.fullmatch(args.username):
        raise CommandError(f"username {args.username!r}: {USERNAME_RULE}")
    username = args.username.lower()
    _prepare_dirs(config, names)
    if asyncio.run(_username_taken(config, names, username)):
        raise CommandError(f"username {username!r} is taken: choose another")
    try:
        password = _read_password(args.password_stdin)
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        return _fail("cancelled: no account was created", status=CANCELLED)
    if not 8 <= len(password) <= 1024:
        raise CommandError("the password must be 8-1024 characters")
    user = asyncio.run(
        _insert_user(config, names, username, password, args.display_name, args.admin)
    )
    if user.is_admin:
        discard_setup_file(config.data_dir)
    print(f"created {'admin' if user.is_admin else 'user'} {user.username} (id {user.id})")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CommandError("no password on standard input (--password-stdin reads one line)")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError(
            "standard input is not a terminal: to pipe the password, add --password-stdin"
        )
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise CommandError("the passwords differ: try again")
    return password


async def _username_taken(config: Config, names: _NameOf, username: str) -> bool:
    db = await _open_database(config, names)
    try:
        return await db.get_credentials(username) is not None
    finally:
        await db.close()


async def _insert_user(
    config: Config,
    names: _NameOf,
    username: str,
    password: str,
    display_name: str | None,
    is_admin: bool,
) -> User:
    db = await _open_database(config, names)
    hasher = PasswordHasher(config.bcrypt_rounds)
    try:
        user, _ = await create_account(
            db, hasher, username, password, display_name, is_admin=is_admin
        )
        return user
    except Conflict:
        raise CommandError(f"username {username!r} is taken: choose another") from None
    finally:
        await db.close()
        hasher.close()
