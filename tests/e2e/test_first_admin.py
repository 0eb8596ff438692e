"""The first admin with real `python run.py` processes: the setup link in the start-up
banner, nodes sharing one database, and `create-user --admin` ending the link."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import requests

from ..helpers import PASSWORD
from ..helpers.servers import REPO, ServerProcess, engine_env

pytestmark = pytest.mark.e2e

FIRST_ADMIN = "first admin:"


def banner_of(server: ServerProcess) -> str:
    """This start's log once its banner is complete ("sockets:" is its last line)."""
    deadline = time.monotonic() + 10
    while "sockets:" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.log_path.read_text(errors="replace")


def setup_required(server: ServerProcess) -> bool:
    response = requests.get(server.url + "/api/v1/server", timeout=10)
    assert response.status_code == 200
    return response.json()["setup_required"]


def signup_status(server: ServerProcess, username: str, invite: str) -> int:
    response = requests.post(
        server.url + "/api/v1/auth/signup",
        json={"username": username, "password": PASSWORD, "invite": invite},
        timeout=10,
    )
    return response.status_code


def create_admin(env: dict[str, str], username: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    return subprocess.run(
        [sys.executable, "run.py", "create-user", username, "--admin", "--password-stdin"],
        cwd=REPO,
        env=clean | {"CHAT_BCRYPT_ROUNDS": "4"} | env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_banner_gives_the_setup_link_until_an_admin_exists(engine, request, tmp_path):
    node_a, node_b = tmp_path / "a", tmp_path / "b"
    with engine_env(engine, request, node_a) as env_a:
        shared_db = env_a.get("CHAT_DATABASE_URL", f"sqlite:///{node_a / 'chat.db'}")
        env_b = {"CHAT_DATA_DIR": str(node_b), "CHAT_DATABASE_URL": shared_db}
        invite_only = {"CHAT_REGISTRATION": "invite"}
        first = ServerProcess(env_a | invite_only, tmp_path).start()
        second = ServerProcess(env_b | invite_only, tmp_path)
        try:
            banner = banner_of(first)
            token_file = node_a / "setup_token"
            token = token_file.read_text().strip()
            assert f"{FIRST_ADMIN} open {first.url}/#setup={token} " in banner
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert setup_required(first)

            # Another node on the same database keeps the link the first one printed.
            second.start()
            other = banner_of(second)
            assert "#setup=" not in other and "data dir of the node that made it" in other
            assert not (node_b / "setup_token").exists()
            # A restart finds its own token in its data dir: the same link again.
            first.stop()
            first.start()
            assert f"/#setup={token} " in banner_of(first)

            done = create_admin(env_a, "root")
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("created admin root")
            assert not token_file.exists()
            assert not setup_required(first) and not setup_required(second)
            assert signup_status(second, "late", token) == 403
            login = requests.post(
                first.url + "/api/v1/auth/login",
                json={"username": "root", "password": PASSWORD},
                timeout=10,
            )
            assert login.json()["user"]["is_admin"] is True

            second.stop()
            second.start()
            assert FIRST_ADMIN not in banner_of(second)
        finally:
            first.stop()
            second.stop()
        assert "Traceback" not in first.logs() + second.logs()


def test_the_setup_link_makes_the_admin_once(tmp_path, request):
    with engine_env("sqlite", request, tmp_path / "data") as env:
        server = ServerProcess(env | {"CHAT_REGISTRATION": "closed"}, tmp_path).start()
        try:
            banner_of(server)
            token = (tmp_path / "data" / "setup_token").read_text().strip()
            assert signup_status(server, "eve", "not-the-token") == 403
            assert signup_status(server, "root", token) == 201
            assert not (tmp_path / "data" / "setup_token").exists()
            assert signup_status(server, "again", token) == 403
            assert not setup_required(server)
        finally:
            server.stop()
