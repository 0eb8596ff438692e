"""Fault injection with real server processes: nothing acked is ever lost.

- kill -9 while four WebSocket clients send with `client_id` (several sends in
  flight each, so some are committed but not acked when the process dies);
  restart on the same port and data; clients reconnect, `resume`, retry every
  unacked `client_id`: each message is in history exactly once and every client
  has seen each exactly once, in seq order;
- the same over REST with many concurrent POSTs (kill between receive and commit);
- PostgreSQL stopped under traffic: 503 + Retry-After (`unavailable`) meanwhile,
  recovery without a server restart, nothing acked lost;
- SQLite after kill -9 mid-write: integrity_check ok, seqs contiguous per room,
  every acked message present.

Under CI=true nothing here may be skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from ..helpers import IN_CI, PASSWORD
from ..helpers.postgres import run_sync
from ..helpers.servers import ServerProcess, engine_env, free_port

pytestmark = pytest.mark.e2e

CONNECTION_ERRORS = (aiohttp.ClientError, ConnectionError, OSError, asyncio.TimeoutError)


def _missing(tool: str) -> None:
    if IN_CI:
        pytest.fail(f"{tool} is required under CI=true")
    pytest.skip(f"{tool} is not available here")


@pytest.fixture(params=["sqlite", "postgres"])
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    with engine_env(request.param, request, tmp_path / "data") as env:
        yield env


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body, response.headers

    async def signup(self, username: str) -> str:
        status, body, _ = await self.call(
            "POST", "/api/v1/auth/signup", json={"username": username, "password": PASSWORD}
        )
        assert status == 201, body
        return body["access_token"]

    async def room(self, token: str, members: list[str]) -> int:
        status, room, _ = await self.call(
            "POST", "/api/v1/rooms", token, json={"name": "faults", "kind": "public"}
        )
        assert status == 201, room
        for member in members:
            status, _, _ = await self.call("POST", f"/api/v1/rooms/{room['id']}/join", member)
            assert status == 200
        return room["id"]

    async def history(self, token: str, room_id: int) -> list[dict]:
        items: list[dict] = []
        while True:
            status, page, _ = await self.call(
                "GET",
                f"/api/v1/rooms/{room_id}/messages",
                token,
                params={"after_seq": str(len(items)), "limit": "100"},
            )
            assert status == 200, page
            items += page["items"]
            if not page["has_more"]:
                return items


class Progress:
    """Counts acks; `reached(n)` is awaited instead of polling."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def add(self, n: int = 1) -> None:
        self.count += n
        for threshold, event in self._waiters:
            if self.count >= threshold:
                event.set()

    async def reached(self, threshold: int, timeout: float = 60) -> None:
        event = asyncio.Event()
        self._waiters.append((threshold, event))
        self.add(0)
        await asyncio.wait_for(event.wait(), timeout)


def _assert_exactly_once(history: list[dict], sent: set[str], acked: dict[str, dict]) -> None:
    """Seqs 1..n, each client_id once, every acked message present as acked."""
    assert [m["seq"] for m in history] == list(range(1, len(history) + 1))
    counts = Counter(m["client_id"] for m in history)
    assert max(counts.values(), default=1) == 1, [c for c, n in counts.items() if n > 1]
    assert set(counts) <= sent
    by_client_id = {m["client_id"]: m for m in history}
    for client_id, message in acked.items():
        stored = by_client_id.get(client_id)
        assert stored is not None, f"acked {client_id} is lost"
        assert (stored["id"], stored["seq"]) == (message["id"], message["seq"])


# --- (1) and (2): kill -9 under WebSocket senders -----------------------------------


@dataclass
class Sender:
    name: str
    token: str
    client_ids: list[str]
    acked: dict[str, dict] = field(default_factory=dict)
    seen: list[dict] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    reconnects: int = 0
    retried: int = 0  # client_ids sent again after a failure
    last_pos: int = 0  # of the room's stream, as delivered to this sender

    @property
    def last_seq(self) -> int:
        return self.seen[-1]["seq"] if self.seen else 0


async def _sender(base: str, sender: Sender, room_id: int, total: int, window: int) -> None:
    """Sends its client_ids `window` at a time; on any failure reconnects, resumes, retries."""
    session = aiohttp.ClientSession()
    sent_before: set[str] = set()
    deadline = time.monotonic() + 90
    try:
        while len(sender.acked) < len(sender.client_ids) or sender.last_seq < total:
            assert time.monotonic() < deadline, "sender did not finish"
            try:
                ws = await session.ws_connect(
                    base + "/api/v1/ws", headers={"Authorization": f"Bearer {sender.token}"}
                )
            except CONNECTION_ERRORS:
                await asyncio.sleep(0.05)  # the server is down: poll until it is back
                continue
            try:
                await _send_batch(ws, sender, room_id, total, window, sent_before)
            except CONNECTION_ERRORS:
                pass
            finally:
                sender.reconnects += 1
                await ws.close()
    finally:
        await session.close()


async def _send_batch(ws, sender: Sender, room_id, total, window, sent_before: set[str]):
    first = await ws.receive(timeout=10)
    if first.type != WSMsgType.TEXT:
        raise ConnectionError(f"no ready: {first.type}")
    await ws.send_json({"type": "resume", "rooms": {str(room_id): sender.last_pos}})
    todo = [c for c in sender.client_ids if c not in sender.acked]
    in_flight: set[str] = set()

    async def fill() -> None:
        while todo and len(in_flight) < window:
            client_id = todo.pop(0)
            if client_id in sent_before:
                sender.retried += 1
            sent_before.add(client_id)
            in_flight.add(client_id)
            await ws.send_json(
                {
                    "type": "send",
                    "room_id": room_id,
                    "body": f"m {client_id}",
                    "client_id": client_id,
                }
            )

    await fill()
    while in_flight or todo or sender.last_seq < total:
        msg = await ws.receive(timeout=10)
        if msg.type != WSMsgType.TEXT:
            raise ConnectionError(f"connection ended: {msg.type} {msg.data}")
        frame = msg.json()
        if frame.get("pos") is not None:  # a room event: the stream in order, once each
            assert frame["pos"] == sender.last_pos + 1, (sender.name, frame, sender.last_pos)
            sender.last_pos = frame["pos"]
        if frame["type"] == "ack":
            message = frame["message"]
            if message["client_id"] not in sender.acked:
                sender.progress.add()
            sender.acked[message["client_id"]] = message
            in_flight.discard(message["client_id"])
            await fill()
        elif frame["type"] == "message.new":
            message = frame["message"]
            assert message["seq"] == sender.last_seq + 1, (sender.name, message, sender.last_seq)
            sender.seen.append(message)
        elif frame["type"] == "error":
            raise AssertionError(frame)


async def _kill_when(server: ServerProcess, progress: Progress, thresholds: list[int]) -> int:
    kills = 0
    for threshold in thresholds:
        await progress.reached(threshold)
        await asyncio.to_thread(server.stop, signal.SIGKILL)
        kills += 1
        await asyncio.to_thread(server.start)  # same port, same data
    return kills


async def test_kill_9_under_websocket_senders_loses_nothing(tmp_path, server_env):
    server = ServerProcess(server_env, tmp_path).start()
    per_sender, window = 60, 6
    total = 4 * per_sender
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, server.url)
            tokens = [await api.signup(f"sender{i}") for i in range(4)]
            room_id = await api.room(tokens[0], tokens[1:])
        progress = Progress()
        senders = [
            Sender(f"sender{i}", token, [f"c{i}-{n}" for n in range(per_sender)], progress=progress)
            for i, token in enumerate(tokens)
        ]
        tasks = [
            asyncio.create_task(_sender(server.url, s, room_id, total, window)) for s in senders
        ]
        kills = await _kill_when(server, progress, [total // 4, total // 2])
        await asyncio.wait_for(asyncio.gather(*tasks), 120)

        async with aiohttp.ClientSession() as session:
            history = await Api(session, server.url).history(tokens[0], room_id)
        acked = {c: m for s in senders for c, m in s.acked.items()}
        sent = {c for s in senders for c in s.client_ids}
        assert len(history) == total and len(acked) == total
        _assert_exactly_once(history, sent, acked)
        for sender in senders:  # each saw each message once, in seq order, across restarts
            assert [m["id"] for m in sender.seen] == [m["id"] for m in history], sender.name
        assert kills == 2 and all(s.reconnects >= 3 for s in senders)
        print(
            f"{kills} kills, {len(acked)} acked checked, "
            f"{sum(s.retried for s in senders)} retried client_ids"
        )
    finally:
        server.stop()


async def test_kill_9_between_receive_and_commit_over_rest(tmp_path, server_env):
    """Many POSTs in flight at the kill: some commit without an ack; each retry is deduplicated."""
    server = ServerProcess(server_env, tmp_path).start()
    count = 300
    client_ids = [f"r-{n}" for n in range(count)]
    acked: dict[str, dict] = {}
    progress = Progress()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, server.url)
            token = await api.signup("flooder")
            room_id = await api.room(token, [])

            async def post(client_id: str) -> None:
                try:
                    status, body, _ = await api.call(
                        "POST",
                        f"/api/v1/rooms/{room_id}/messages",
                        token,
                        json={"body": f"m {client_id}", "client_id": client_id},
                    )
                except CONNECTION_ERRORS:
                    return
                if status in (200, 201):
                    acked[client_id] = body
                    progress.add()

            flood = [asyncio.create_task(post(c)) for c in client_ids]
            await progress.reached(count // 5)
            await asyncio.to_thread(server.stop, signal.SIGKILL)
            await asyncio.gather(*flood)
            acked_before_kill = dict(acked)
            await asyncio.to_thread(server.start)

            history = await api.history(token, room_id)
            # Before any retry: at most once each, and every ack survived the kill.
            _assert_exactly_once(history, set(client_ids), acked_before_kill)
            committed_unacked = {m["client_id"] for m in history} - set(acked_before_kill)

            retries = [c for c in client_ids if c not in acked_before_kill]
            for client_id in retries:
                status, body, _ = await api.call(
                    "POST",
                    f"/api/v1/rooms/{room_id}/messages",
                    token,
                    json={"body": f"m {client_id}", "client_id": client_id},
                )
                # A retry of a message committed before the kill returns the original with 200.
                assert status == (200 if client_id in committed_unacked else 201), body
                acked[client_id] = body
            history = await api.history(token, room_id)
        assert len(history) == count
        _assert_exactly_once(history, set(client_ids), acked)
        print(
            f"acked before kill {len(acked_before_kill)}, committed but unacked "
            f"{len(committed_unacked)}, retried {len(retries)}, acked checked {len(acked)}"
        )
    finally:
        server.stop()


# --- (3) PostgreSQL restarted under traffic -----------------------------------------


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb as the postgres OS user) on a free port."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            _missing("initdb (PostgreSQL server binaries)")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="chat-faults-pg-"))
        self.data = self.root / "data"
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            if shutil.which("runuser") is None:
                _missing("runuser")
            shutil.chown(self.root, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def _pg(self, *args: str) -> None:
        done = subprocess.run(
            [*self.as_postgres, *args], capture_output=True, text=True, timeout=60, cwd=self.root
        )
        assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> PostgresCluster:
        self._pg(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        return self.start()

    def start(self) -> PostgresCluster:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "pg.log")
        self._pg(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-o", options, "start"
        )
        return self

    def stop(self) -> None:
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/chat"


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.init()
    try:
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"

        async def create() -> None:
            import asyncpg

            conn = await asyncpg.connect(admin)
            try:
                await conn.execute("CREATE DATABASE chat")
            finally:
                await conn.close()

        run_sync(create())
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):
            cluster.stop()  # unless already stopped
        shutil.rmtree(cluster.root, ignore_errors=True)


async def test_postgres_restart_mid_traffic_is_503_then_recovers(tmp_path, own_postgres):
    server = ServerProcess(
        {"CHAT_DATA_DIR": str(tmp_path / "data"), "CHAT_DATABASE_URL": own_postgres.url}, tmp_path
    ).start()
    acked: dict[str, dict] = {}
    outcomes: Counter = Counter()
    sent: set[str] = set()
    progress = Progress()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            api = Api(session, server.url)
            token = await api.signup("steady")
            room_id = await api.room(token, [])
            stop_traffic = asyncio.Event()
            unavailable_seen = asyncio.Event()

            async def traffic(worker: int) -> None:
                n = 0
                while not stop_traffic.is_set():
                    client_id = f"w{worker}-{n}"
                    n += 1
                    sent.add(client_id)
                    status, body, headers = await api.call(
                        "POST",
                        f"/api/v1/rooms/{room_id}/messages",
                        token,
                        json={"body": "x", "client_id": client_id},
                    )
                    outcomes[status] += 1
                    if status == 201:
                        acked[client_id] = body
                        progress.add()
                    else:
                        assert status == 503, (status, body)
                        assert body["error"]["code"] == "unavailable", body
                        assert int(headers["Retry-After"]) >= 1
                        unavailable_seen.set()
                        await asyncio.sleep(0.05)

            workers = [asyncio.create_task(traffic(i)) for i in range(3)]
            await progress.reached(30)
            await asyncio.to_thread(own_postgres.stop)
            await asyncio.wait_for(unavailable_seen.wait(), 20)
            status, body, headers = await api.call("GET", "/readyz")
            assert status == 503 and body["error"]["code"] == "unavailable"
            status, body, headers = await api.call("GET", "/api/v1/users/me", token)
            assert status == 503 and "Retry-After" in headers, (status, body)
            await asyncio.sleep(2)  # the database stays down a while under traffic
            acked_while_down = len(acked)
            await asyncio.to_thread(own_postgres.start)
            await progress.reached(acked_while_down + 30, timeout=30)  # recovered, same process
            stop_traffic.set()
            await asyncio.gather(*workers)
            status, _, _ = await api.call("GET", "/readyz")
            assert status == 200
            history = await api.history(token, room_id)
        _assert_exactly_once(history, sent, acked)
        assert server.process is not None and server.process.poll() is None
        assert server.starts == 1  # no restart was needed
        assert outcomes[503] >= 1 and outcomes[201] == len(acked)
        print(f"outcomes {dict(outcomes)}, acked checked {len(acked)}")
    finally:
        server.stop()


# --- (4) SQLite consistency after kill -9 mid-write ----------------------------------


async def test_sqlite_kill_9_mid_write_leaves_a_consistent_database(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess({"CHAT_DATA_DIR": str(data)}, tmp_path).start()
    acked: dict[str, dict] = {}
    progress = Progress()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, server.url)
            token = await api.signup("writer")
            rooms = [await api.room(token, []) for _ in range(3)]

            async def writer(room_id: int, lane: int) -> None:
                for n in range(1000):
                    client_id = f"{room_id}-{lane}-{n}"
                    try:
                        status, body, _ = await api.call(
                            "POST",
                            f"/api/v1/rooms/{room_id}/messages",
                            token,
                            json={"body": "y" * 500, "client_id": client_id},
                        )
                    except CONNECTION_ERRORS:
                        return
                    assert status == 201, body
                    acked[client_id] = body
                    progress.add()

            writers = [asyncio.create_task(writer(r, lane)) for lane in range(3) for r in rooms]
            await progress.reached(150)
            server.process.kill()  # SIGKILL, mid-write
            server.process.wait()
            await asyncio.gather(*writers)
    finally:
        server.stop()

    db = sqlite3.connect(data / "chat.db")  # opening replays the WAL, as the server would
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        for room_id in rooms:
            seqs = [
                s
                for (s,) in db.execute(
                    "SELECT seq FROM messages WHERE room_id = ? ORDER BY seq", (room_id,)
                )
            ]
            assert seqs == list(range(1, len(seqs) + 1)), room_id
            (last_seq,) = db.execute(
                "SELECT last_seq FROM rooms WHERE id = ?", (room_id,)
            ).fetchone()
            assert last_seq == len(seqs), (room_id, last_seq, len(seqs))
        stored = {
            client_id: (message_id, room_id, seq)
            for client_id, message_id, room_id, seq in db.execute(
                "SELECT client_id, id, room_id, seq FROM messages"
            )
        }
    finally:
        db.close()
    for client_id, message in acked.items():
        assert stored.get(client_id) == (message["id"], message["room_id"], message["seq"]), (
            client_id
        )
    # And the server starts again on that file and serves it.
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            history = await Api(session, server.url).history(token, rooms[0])
        assert len(history) == sum(1 for m in stored.values() if m[1] == rooms[0])
    finally:
        server.stop()
    print(f"acked checked {len(acked)}, stored {len(stored)}")
