"""Real server processes for end-to-end tests: `python run.py` on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .postgres import scratch_database

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.1)


@contextlib.contextmanager
def engine_env(
    engine: str, request: pytest.FixtureRequest, data_dir: Path
) -> Iterator[dict[str, str]]:
    """Environment for `python run.py` on `engine`: SQLite in `data_dir`, or a scratch
    PostgreSQL database (skipped without PostgreSQL, a failure under CI=true)."""
    env = {"CHAT_DATA_DIR": str(data_dir)}
    if engine == "sqlite":
        yield env
        return
    request.getfixturevalue("pg_database")
    with scratch_database() as url:
        yield env | {"CHAT_DATABASE_URL": url}


@dataclass
class ServerProcess:
    """One `python run.py` with its own port; logs go to files in `workdir`.
    A None in `env` leaves that variable unset (the server's default)."""

    env: Mapping[str, str | None]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.port}-{self.starts}.log"

    def start(self) -> ServerProcess:
        self.starts += 1
        settings = {
            **os.environ,
            "CHAT_PORT": str(self.port),
            "CHAT_BCRYPT_ROUNDS": "4",
            "CHAT_AUTH_RATE": "0",
            "CHAT_MESSAGE_RATE": "0",
            "CHAT_REGISTRATION": "open",
            "CHAT_SECRET_KEY": "end-to-end-test-secret-key-" + "k" * 32,
            **self.env,
        }
        env = {key: value for key, value in settings.items() if value is not None}
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "run.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_http(self.url + "/healthz")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> str:
        return "".join(
            (self.workdir / f"server-{self.port}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )


class RedisProcess:
    """A throwaway redis-server on a free port, so a test may kill and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its sockets open and answers nothing (a stall, not an outage)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def unpause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
