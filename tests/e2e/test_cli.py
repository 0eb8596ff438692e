"""`python run.py` as a new user meets it: start-up errors, create-user, the banner.

Every mistake a user can make at start-up ends in one line on stderr naming the
cause and the fix, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import os
import pty
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from chat_server import Config, create_app

from ..helpers import PASSWORD
from ..helpers.postgres import scratch_database
from ..helpers.servers import REPO, free_port, wait_http


def run(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str, str]:
    """`python run.py ARGS` with CHAT_* from `env` only; (status, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    done = subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO,
        env=clean | {"CHAT_BCRYPT_ROUNDS": "4"} | (env or {}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def one_line_error(status: int, stderr: str) -> str:
    """Asserts a failure reported in one line without a traceback; returns the line."""
    assert status != 0, stderr
    assert "Traceback" not in stderr and "usage:" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# --- configuration errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["serve", "--port", "http"], {}, "--port 'http'"),
        (["--port", "70000", "serve"], {}, "--port '70000'"),
        ([], {"CHAT_PORT": "http"}, "CHAT_PORT='http'"),
        (["migrate"], {"CHAT_REDIS_URL": "localhost:6379"}, "CHAT_REDIS_URL"),
        (["--redis-url", "redis://host:port/0"], {}, "--redis-url"),
        ([], {"CHAT_AUTH_RATE": "ten"}, "CHAT_AUTH_RATE"),
    ],
)
def test_a_configuration_error_names_what_the_user_typed(args, env, named, tmp_path):
    status, _, stderr = run(*args, env={"CHAT_DATA_DIR": str(tmp_path)} | env)
    line = one_line_error(status, stderr)
    assert named in line
    assert "invalid literal" not in line and "int()" not in line


def test_a_secret_is_not_repeated_in_its_error(tmp_path):
    status, _, stderr = run("migrate", env={"CHAT_SECRET_KEY": "hunter2-is-short"})
    assert "CHAT_SECRET_KEY" in one_line_error(status, stderr)
    assert "hunter2" not in stderr


# --- start-up errors -------------------------------------------------------------------


def with_password(url: str, path: str | None = None) -> tuple[str, str]:
    """`url` with a password (trust authentication ignores it), and that password."""
    parts = urlsplit(url)
    password = parts.password or "hunter2"
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5432}"
    return parts._replace(netloc=netloc, path=path or parts.path).geturl(), password


def test_a_missing_postgres_database(tmp_path, pg_database):
    missing, password = with_password(pg_database, "/no_such_db")
    status, _, stderr = run("serve", "--database-url", missing, "--data-dir", str(tmp_path))
    line = one_line_error(status, stderr)
    assert "no_such_db" in line and "does not exist" in line and "--database-url" in line
    assert f":{password}@" not in line and ":***@" in line


def test_an_unreachable_database(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/chat"
    status, _, stderr = run(
        "migrate", env={"CHAT_DATABASE_URL": url, "CHAT_DATA_DIR": str(tmp_path)}
    )
    line = one_line_error(status, stderr)
    assert "cannot open the database" in line and "CHAT_DATABASE_URL" in line


def test_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("")
    status, _, stderr = run("--data-dir", str(tmp_path / "data"))
    line = one_line_error(status, stderr)
    assert "not a directory" in line and "--data-dir" in line


def test_a_data_dir_that_is_not_writable():
    # sysfs refuses new files even to root, where a chmod would not.
    status, _, stderr = run(env={"CHAT_DATA_DIR": "/sys/kernel"})
    line = one_line_error(status, stderr)
    assert "cannot write to /sys/kernel" in line and "CHAT_DATA_DIR" in line


def test_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, stderr = run("serve", "--port", str(port), "--data-dir", str(tmp_path))
    line = one_line_error(status, stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line and "--port" in line


# --- serve: flags after the command, the banner, the open-file limit ------------------


def _lower_open_file_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def test_serve_takes_flags_after_the_command_and_says_where_everything_is(tmp_path, pg_database):
    port = free_port()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    log_path = tmp_path / "server.log"
    with scratch_database() as scratch, log_path.open("wb") as log:
        url, password = with_password(scratch)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        process = subprocess.Popen(
            [sys.executable, "run.py", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
            cwd=REPO,
            env=clean | {"CHAT_DATABASE_URL": url},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_lower_open_file_limit,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            deadline = time.monotonic() + 10
            while "sockets:" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(15)
    banner = log_path.read_text()
    assert f"open http://127.0.0.1:{port}" in banner
    assert f"data: {tmp_path.resolve()}" in banner
    assert f"database: {url.replace(f':{password}@', ':***@')}" in banner
    assert password not in banner
    assert "redis: none" in banner
    assert f"open-file limit {hard:,}, raised from 256" in banner
    assert "Traceback" not in banner


# --- create-user -----------------------------------------------------------------------


def test_create_user_reads_a_piped_password_with_password_stdin(tmp_path):
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    status, _, stderr = run("create-user", "alice", env=env, stdin=PASSWORD + "\n")
    assert "--password-stdin" in one_line_error(status, stderr)
    status, stdout, stderr = run(
        "create-user", "Alice", "--password-stdin", env=env, stdin=PASSWORD + "\n"
    )
    assert status == 0, stderr
    assert stdout.startswith("created user alice")
    status, _, stderr = run("create-user", "alice", "--password-stdin", env=env, stdin="")
    assert "taken" in one_line_error(status, stderr)
    status, _, stderr = run("create-user", "bob", "--password-stdin", env=env, stdin="")
    assert "no password" in one_line_error(status, stderr)


async def test_an_account_from_the_shell_signs_in_like_one_from_signup(tmp_path, aiohttp_client):
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    status, _, stderr = run("create-user", "carol", "--password-stdin", env=env, stdin=PASSWORD)
    assert status == 0, stderr
    config = Config(data_dir=tmp_path, bcrypt_rounds=4, registration="open")
    client = await aiohttp_client(create_app(config))
    login = await client.post(
        "/api/v1/auth/login", json={"username": "carol", "password": PASSWORD}
    )
    assert login.status == 200
    again = await client.post(
        "/api/v1/auth/signup", json={"username": "CAROL", "password": PASSWORD}
    )
    assert again.status == 409


def _on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, int]:
    """`python run.py ARGS` on a new pseudo-terminal: (pid, the terminal's fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the new one
        os.chdir(REPO)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        os.execve(sys.executable, [sys.executable, "run.py", *args], clean | env)
    return pid, fd


def _read_until(fd: int, wanted: str | None, timeout: float = 20) -> str:
    """The terminal's output until `wanted` appears (None: until the program exits)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted is None or wanted.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise TimeoutError(f"no {wanted!r} in {seen!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the program exited
            chunk = b""
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


def _finish(pid: int, fd: int, timeout: float = 10) -> int:
    """The program's exit status; killed if it is still running after `timeout`."""
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
        os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_ctrl_c_at_the_password_prompt(tmp_path):
    pid, fd = _on_a_terminal("create-user", "dave", env={"CHAT_DATA_DIR": str(tmp_path)})
    try:
        _read_until(fd, "Password:")
        os.write(fd, b"\x03")
        output = _read_until(fd, None)
    finally:
        status = _finish(pid, fd)
    assert status != 0
    assert "cancelled" in output and "Traceback" not in output, output


def test_a_taken_name_is_refused_before_the_password_prompt(tmp_path):
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    assert run("create-user", "erin", "--password-stdin", env=env, stdin=PASSWORD)[0] == 0
    pid, fd = _on_a_terminal("create-user", "erin", env=env)
    try:
        output = _read_until(fd, None)
    finally:
        status = _finish(pid, fd)
    assert status != 0
    assert "taken" in output and "Password" not in output, output


def test_help_lists_every_setting():
    status, stdout, _ = run("--help")
    assert status == 0
    for variable in ("CHAT_PORT", "CHAT_METRICS_TOKEN", "CHAT_REGISTRATION", "CHAT_PUBLIC_URL"):
        assert variable in stdout
