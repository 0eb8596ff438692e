"""The servers under test: how to start each one (pinned to core 0), how to
measure it from /proc, and how to speak its wire protocol.

Targets: ``ceiling`` (bench/ceiling_server.py), ``peer`` (python-socketio,
bench/peer_server.py), ``sqlite`` and ``postgres`` (our server, ``run.py``, with
authentication and persistence on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import Sink, WSConn, connect, encode_frame

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
GEN_CORE = 1
PG_ADMIN_DSN = os.environ.get("BENCH_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench-password-1"
# Seconds a client may take to connect and finish its handshake (5,000 opening
# at once on a busy machine take a while).
OPEN_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

DELIVER = b"message.new"


# --- /proc readings ---------------------------------------------------------
def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (servers may fork helpers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree (all threads), from /proc/<pid>/stat."""
    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def core_jiffies() -> dict[int, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat. Busy includes irq and
    softirq time, which the kernel does not charge to any process: on loopback
    much of the TCP work is softirq, so a core can be full while the process
    on it shows 60 %."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                out[int(name[3:])] = (sum(v) - v[3] - v[4], sum(v))
    return out


def core_busy(
    a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]], core: int
) -> float | None:
    if core not in a or core not in b:
        return None
    total = b[core][1] - a[core][1]
    return round((b[core][0] - a[core][0]) / total, 3) if total else None


def db_cpu_seconds() -> float:
    """CPU of all local PostgreSQL processes (the database's share of the work)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{d}/stat") as f:
            raw = f.read()
        if "(postgres)" not in raw:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class Meter:
    """CPU use over a window: the server tree, this process (the generator),
    PostgreSQL, each core, and what is left: load from other programs on the
    machine ("foreign"), which makes latency figures unreliable."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.t0 = time.monotonic()
        self.s0 = cpu_seconds(server_pid) if server_pid else 0.0
        self.g0 = time.process_time()
        self.d0 = db_cpu_seconds()
        self.j0 = core_jiffies()

    def read(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        server = cpu_seconds(self.pid) - self.s0 if self.pid else 0.0
        gen = time.process_time() - self.g0
        # PostgreSQL backends that exit take their CPU with them: never below 0
        db = max(0.0, db_cpu_seconds() - self.d0)
        j1 = core_jiffies()
        busy = sum(j1[c][0] - self.j0[c][0] for c in j1 if c in self.j0) / CLK_TCK
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "gen_cpu_s": gen,
            "db_cpu_s": db,
            "server_core_busy": core_busy(self.j0, j1, SERVER_CORE) if can_pin() else None,
            "gen_core_busy": core_busy(self.j0, j1, GEN_CORE) if can_pin() else None,
            "foreign_cores": round(max(0.0, busy - server - gen - db) / wall, 3) if wall else None,
        }


def rss_kib(pid: int) -> int:
    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/statm") as f:
            total += int(f.read().split()[1]) * PAGE_KIB
    return total


def self_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Decided once at import, before this process pins itself to the generator core
# (children inherit that affinity, so asking later would always say "one core").
_CAN_PIN = shutil.which("taskset") is not None and {SERVER_CORE, GEN_CORE} <= os.sched_getaffinity(
    0
)


def can_pin() -> bool:
    return _CAN_PIN


def pin_self_to_generator_core() -> bool:
    if not _CAN_PIN:
        return False
    os.sched_setaffinity(0, {GEN_CORE})
    return True


def our_server_uses_uvloop() -> bool:
    files = [REPO / "run.py", *(REPO / "chat_server").rglob("*.py")]
    for f in files:
        with contextlib.suppress(OSError):
            if "uvloop" in f.read_text(encoding="utf-8", errors="replace"):
                return True
    return False


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


# --- PostgreSQL scratch databases ------------------------------------------
async def create_pg_db(name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def drop_pg_db(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- targets ----------------------------------------------------------------
@dataclass
class Client:
    conn: WSConn
    room: int
    index: int
    send_prefix: bytes = b""
    send_suffix: bytes = b""


@dataclass
class Target:
    name: str
    workdir: Path
    uvloop: bool = False
    bcrypt_rounds: int = 4
    proc: subprocess.Popen | None = None
    port: int = 0
    log_path: Path | None = None
    pg_db: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    has_auth = False
    has_db = False

    # -- lifecycle --
    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    async def prepare(self) -> None:
        """Before start (e.g. create a database)."""

    async def cleanup(self) -> None:
        """After stop."""

    async def start(self) -> None:
        await self.prepare()
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}-{self.port}.log"
        cmd = self.command()
        if can_pin():
            cmd = ["taskset", "-c", str(SERVER_CORE), *cmd]
        self.proc = _spawn(cmd, self.env(), self.log_path)
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with s.get(
                        self.url("/healthz"), timeout=aiohttp.ClientTimeout(total=2)
                    ) as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer /healthz in 90 s; log:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            for _ in range(100):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        await self.cleanup()

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- protocol --
    async def setup_users(
        self, memberships: list[int], session: aiohttp.ClientSession
    ) -> list[Any]:
        """Create whatever identity each client needs; returns per-client creds."""
        return [None] * len(memberships)

    async def open_client(self, index: int, room: int, cred: Any, sink: Sink) -> Client:
        raise NotImplementedError

    def send_frame(self, client: Client, ts: int, n: int) -> bytes:
        body = b"%d:%d:%d" % (ts, client.index, n)
        return encode_frame(client.send_prefix + body + client.send_suffix % n)

    async def ping(self, client: Client) -> None:
        fut = client.conn.expect(b'"pong"')
        client.conn.send_text(b'{"type":"ping"}')
        await fut


class CeilingTarget(Target):
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.ceiling_server", "--port", str(self.port)]
        return [*cmd, "--uvloop"] if self.uvloop else cmd

    async def open_client(self, index: int, room: int, cred: Any, sink: Sink) -> Client:
        conn = await connect("127.0.0.1", self.port, f"/ws?room={room}", sink, DELIVER)
        await asyncio.wait_for(conn.expect(b"ready"), OPEN_TIMEOUT)
        conn.settled()
        return Client(
            conn,
            room,
            index,
            b'{"type":"send","room_id":%d,"body":"bench:' % room,
            b'","ref":"r%d"}',
        )


class PeerTarget(Target):
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "bench.peer_server", "--port", str(self.port)]
        return [*cmd, "--uvloop"] if self.uvloop else cmd

    async def open_client(self, index: int, room: int, cred: Any, sink: Sink) -> Client:
        conn = await connect(
            "127.0.0.1", self.port, "/socket.io/?EIO=4&transport=websocket", sink, DELIVER, eio=True
        )
        await asyncio.wait_for(conn.expect(b"0{", prefix=True), OPEN_TIMEOUT)  # Engine.IO open
        conn.send_text(b"40")  # Socket.IO connect to "/"
        await asyncio.wait_for(conn.expect(b"40", prefix=True), OPEN_TIMEOUT)
        conn.send_text(b'421["join",{"room_id":%d}]' % room)  # with ack id 1
        await asyncio.wait_for(conn.expect(b"431", prefix=True), OPEN_TIMEOUT)
        conn.settled()
        return Client(
            conn, room, index, b'42["send",{"room_id":%d,"body":"bench:' % room, b'","ref":"r%d"}]'
        )

    async def ping(self, client: Client) -> None:
        fut = client.conn.expect(b'42["pong"', prefix=True)
        client.conn.send_text(b'42["ping"]')
        await fut


class OurTarget(Target):
    has_auth = True
    has_db = True

    def __init__(self, name: str, workdir: Path, engine: str, **kw: Any) -> None:
        super().__init__(name, workdir, **kw)
        self.engine = engine
        self.db_url = ""
        self._user_seq = 0

    async def prepare(self) -> None:
        data = self.workdir / f"data-{self.name}-{os.getpid()}-{time.monotonic_ns()}"
        data.mkdir(parents=True)
        self.data_dir = data
        if self.engine == "postgres":
            self.pg_db = f"chat_bench_{os.getpid()}_{time.monotonic_ns() % 10**9}"
            self.db_url = await create_pg_db(self.pg_db)
        else:
            self.db_url = f"sqlite:///{data}/chat.db"

    async def cleanup(self) -> None:
        if self.pg_db:
            with contextlib.suppress(Exception):
                await drop_pg_db(self.pg_db)
            self.pg_db = None
        with contextlib.suppress(Exception):
            shutil.rmtree(self.data_dir)

    def command(self) -> list[str]:
        return [sys.executable, "run.py"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CHAT_HOST="127.0.0.1",
            CHAT_PORT=str(self.port),
            CHAT_DATA_DIR=str(self.data_dir),
            CHAT_DATABASE_URL=self.db_url,
            CHAT_AUTH_RATE="0",
            CHAT_MESSAGE_RATE="0",
            CHAT_REGISTRATION="open",  # the benchmarks sign their users up
            CHAT_BCRYPT_ROUNDS=str(self.bcrypt_rounds),
            CHAT_ACCESS_TTL="7200",
        )
        env.pop("CHAT_REDIS_URL", None)
        return env

    async def _post(
        self, s: aiohttp.ClientSession, path: str, body: Any, token: str | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with s.post(self.url("/api/v1" + path), json=body, headers=headers) as r:
            text = await r.text()
            if r.status >= 300:
                raise RuntimeError(f"POST {path} -> {r.status} {text[:300]}")
            return json.loads(text) if text else None

    async def signup(self, s: aiohttp.ClientSession) -> tuple[str, str]:
        self._user_seq += 1
        username = f"b{os.getpid() % 10000}u{self._user_seq}"
        data = await self._post(s, "/auth/signup", {"username": username, "password": PASSWORD})
        return username, data["access_token"]

    async def setup_users(
        self, memberships: list[int], session: aiohttp.ClientSession
    ) -> list[Any]:
        """One user per client; the first member of each room creates it, the
        others join. ``memberships[i]`` is a room label; returns (token, room_id)."""
        sem = asyncio.Semaphore(16)

        async def one(_: int) -> str:
            async with sem:
                return (await self.signup(session))[1]

        tokens = await asyncio.gather(*(one(i) for i in range(len(memberships))))
        first: dict[int, int] = {}
        for i, label in enumerate(memberships):
            first.setdefault(label, i)
        room_ids: dict[int, int] = {}

        async def create(label: int, i: int) -> None:
            async with sem:
                room = await self._post(
                    session, "/rooms", {"name": f"bench-{label}-{i}", "kind": "public"}, tokens[i]
                )
                room_ids[label] = room["id"]

        await asyncio.gather(*(create(label, i) for label, i in first.items()))

        async def join(i: int, label: int) -> None:
            if first[label] == i:
                return
            async with sem:
                await self._post(session, f"/rooms/{room_ids[label]}/join", None, tokens[i])

        await asyncio.gather(*(join(i, label) for i, label in enumerate(memberships)))
        return [(tokens[i], room_ids[label]) for i, label in enumerate(memberships)]

    async def open_client(self, index: int, room: int, cred: Any, sink: Sink) -> Client:
        token, room_id = cred
        conn = await connect(
            "127.0.0.1",
            self.port,
            "/api/v1/ws",
            sink,
            DELIVER,
            headers={"Authorization": f"Bearer {token}"},
        )
        await asyncio.wait_for(conn.expect(b'"ready"'), OPEN_TIMEOUT)
        # The server holds live events until the first frame after ready is
        # handled (API.md); a ping is that frame and tells us when it is done.
        fut = conn.expect(b'"pong"')
        conn.send_text(b'{"type":"ping"}')
        await asyncio.wait_for(fut, OPEN_TIMEOUT)
        conn.settled()
        return Client(
            conn,
            room_id,
            index,
            b'{"type":"send","room_id":%d,"body":"bench:' % room_id,
            b'","ref":"r%d"}',
        )


def make_target(name: str, workdir: Path, uvloop: bool, bcrypt_rounds: int = 4) -> Target:
    if name == "ceiling":
        return CeilingTarget(name, workdir, uvloop=uvloop)
    if name == "peer":
        return PeerTarget(name, workdir, uvloop=uvloop)
    if name in ("sqlite", "postgres"):
        return OurTarget(name, workdir, engine=name, bcrypt_rounds=bcrypt_rounds)
    raise ValueError(name)
