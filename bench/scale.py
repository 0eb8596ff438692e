"""``python -m bench scale``: the operations that depend on how much data there is,
at several data sizes, on both engines.

For each engine and size: a fresh database seeded by ``bench.dataset`` (the
server's own migrations, then bulk rows), our server started on it the way the
other scenarios start it (``bench.targets``, pinned to core 0), a check that
the server reads the seeded data consistently, then each operation timed
through the public REST and WebSocket API as the seeded users. Single client
unless the label says 16 clients (16 distinct users, all in the same 300
rooms, running at once; their samples are pooled).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.dataset import (
    BIG_ROOM,
    COMMON_WORD,
    RARE_WORD,
    Seeded,
    Shape,
    disk_bytes,
    parse_size,
    seed,
    size_label,
    username,
)
from bench.loadgen import Sink, WSConn, connect, percentile
from bench.scenarios import NOISE_LIMIT, close_clients, closed_loop_sends, open_clients
from bench.targets import DELIVER, PASSWORD, Meter, OurTarget

FULL_SIZES = (10_000, 300_000, 3_000_000)
QUICK_SIZES = (2_000, 20_000)
# The bar: single-client p50 under this at the largest size ...
P50_LIMIT_MS = 50.0
# ... and no p50 growing more than this from the smallest size to the largest.
GROWTH_LIMIT = 3.0

# (key, label, clients): in the order of the table.
OPERATIONS = (
    ("search_common", f'search a common word ("{COMMON_WORD}", 10 %), all my rooms', 1),
    ("history_during_search", "history page while 2 common-word searches run", 1),
    ("search_rare", f'search a rare word ("{RARE_WORD}"), all my rooms', 1),
    ("rename_big_room", "rename a room of 2,000 members", 1),
    ("resume", "resume 300 rooms x 5 missed events", 1),
    ("resume_16", "resume 300 rooms x 5 missed events, 16 clients", 16),
    ("list_rooms", "GET /rooms (300 rooms)", 1),
    ("list_rooms_16", "GET /rooms (300 rooms), 16 clients", 16),
    ("send_ack_16", "send -> ack, 16 clients closed loop", 16),
)


@dataclass(frozen=True)
class ScaleParams:
    sizes: tuple[int, ...] = FULL_SIZES
    samples: int = 30  # per operation (per client for the 16-client ones: 8)
    samples_each_of_16: int = 8
    op_seconds: float = 20.0  # an operation stops sampling after this, with 5 samples at least
    ack_seconds: float = 5.0
    warmup: float = 1.0
    quiet_wait: float = 5.0
    ops: tuple[str, ...] = tuple(key for key, _, _ in OPERATIONS)  # which to run


QUICK = ScaleParams(
    sizes=QUICK_SIZES, samples=10, samples_each_of_16=3, op_seconds=5.0, ack_seconds=2.0
)


class SeededTarget(OurTarget):
    """Our server on a database seeded before it starts."""

    def __init__(self, name: str, workdir: Path, shape: Shape) -> None:
        super().__init__(name, workdir, engine=name)
        self.shape = shape
        self.seeded: Seeded | None = None
        self.disk = 0

    async def prepare(self) -> None:
        await super().prepare()
        self.seeded = await seed(self.db_url, self.shape)
        self.disk = await disk_bytes(self.db_url)


class Api:
    """The REST API as the seeded users (logged in with PASSWORD)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        self.tokens: dict[int, str] = {}

    async def login(self, user_ids: list[int]) -> None:
        for uid in user_ids:
            data = await self.call(
                "POST", "/auth/login", None, {"username": username(uid), "password": PASSWORD}
            )
            self.tokens[uid] = data["access_token"]

    async def call(self, method: str, path: str, user: int | None, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        async with self.session.request(
            method, self.base + "/api/v1" + path, json=body, headers=headers
        ) as r:
            raw = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status} {raw[:300]!r}")
            return json.loads(raw) if raw else None

    async def timed(self, method: str, path: str, user: int, body: Any = None) -> float:
        """Milliseconds from request to the whole response body (not parsed)."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        t = time.perf_counter()
        async with self.session.request(
            method, self.base + "/api/v1" + path, json=body, headers=headers
        ) as r:
            await r.read()
            ms = (time.perf_counter() - t) * 1000
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status}")
        return ms


class _Resume:
    """A connection's frames during a resume: `ready`, the replayed room events, `resumed`."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[bytes] = loop.create_future()
        self.resumed: asyncio.Future[None] = loop.create_future()
        self.events = 0
        self.gaps = 0

    def on_text(self, conn: WSConn, buf: bytes, start: int, end: int) -> None:
        if not self.ready.done():
            if buf.find(b'"ready"', start, end) >= 0:
                self.ready.set_result(buf[start:end])
        elif buf.find(b'"resumed"', start, end) >= 0:
            if not self.resumed.done():
                self.resumed.set_result(None)
        elif buf.find(b'"gap"', start, end) >= 0:
            self.gaps += 1
        elif buf.find(b'"pos"', start, end) >= 0:
            self.events += 1


async def resume_once(host: str, port: int, token: str, missed: int) -> tuple[float, int, int, int]:
    """Connects, asks for the last `missed` events of each room in `ready`, and
    returns (ms from `resume` to `resumed`, events replayed, rooms, gaps)."""
    probe = _Resume()
    conn = await connect(
        host,
        port,
        "/api/v1/ws",
        Sink(),
        DELIVER,
        headers={"Authorization": f"Bearer {token}"},
        on_text=probe.on_text,
    )
    try:
        rooms = json.loads(await asyncio.wait_for(probe.ready, 60))["rooms"]
        want = {str(r["room_id"]): max(0, r["last_pos"] - missed) for r in rooms}
        t = time.perf_counter()
        conn.send_text(json.dumps({"type": "resume", "rooms": want}).encode())
        await asyncio.wait_for(probe.resumed, 120)
        ms = (time.perf_counter() - t) * 1000
    finally:
        conn.close()
    expected = sum(min(missed, r["last_pos"]) for r in rooms)
    return ms, probe.events, expected, probe.gaps


async def check_seeded(api: Api, seeded: Seeded, port: int) -> list[str]:
    """What the server says against what was seeded; the problems found (none: [])."""
    shape, problems = seeded.shape, []
    me = 1
    page = await api.call("GET", f"/rooms/{BIG_ROOM}/messages?limit=50", me)
    last = page["items"][-1] if page["items"] else {}
    if (
        last.get("seq") != seeded.last_seq[BIG_ROOM]
        or last.get("body") != seeded.last_body[BIG_ROOM]
    ):
        problems.append(f"big room's newest message is {last.get('seq')}, not the seeded one")
    mine = set(seeded.probe_rooms(me))
    expected = min(100, sum(1 for r in seeded.rare_rooms if r in mine))
    found = (await api.call("GET", f"/search?q={RARE_WORD}&limit=100", me))["items"]
    if len(found) != expected or any(RARE_WORD not in m["body"] for m in found):
        problems.append(f"search for the rare word found {len(found)}, not {expected}")
    rooms = (await api.call("GET", "/rooms", me))["items"]
    if len(rooms) != len(mine):
        problems.append(f"GET /rooms has {len(rooms)} rooms, not {len(mine)}")
    for room in rooms:
        rid = room["id"]
        want_unread = min(shape.unread_per_probe_room, seeded.last_seq.get(rid, 0))
        if room["unread_count"] != want_unread or room["last_pos"] != seeded.last_pos(rid):
            problems.append(
                f"room {rid}: unread {room['unread_count']} (want {want_unread}),"
                f" last_pos {room['last_pos']} (want {seeded.last_pos(rid)})"
            )
            break
        if room["member_count"] != len(seeded.members[rid]):
            problems.append(f"room {rid}: member_count {room['member_count']}")
            break
    room_id = 2
    sent = await api.call("POST", f"/rooms/{room_id}/messages", me, {"body": "after seeding"})
    after = await api.call("GET", f"/rooms/{room_id}", me)
    if sent["seq"] != seeded.last_seq.get(room_id, 0) + 1:
        problems.append(f"a send got seq {sent['seq']}, not {seeded.last_seq.get(room_id, 0) + 1}")
    if after["last_pos"] != seeded.last_pos(room_id) + 1:
        problems.append(f"a send made last_pos {after['last_pos']}")
    seeded.last_seq[room_id] = sent["seq"]
    seeded.last_body[room_id] = sent["body"]
    _, events, want, gaps = await resume_once("127.0.0.1", port, api.tokens[me], 5)
    if events != want or gaps:
        problems.append(f"a resume replayed {events} events and {gaps} gaps, not {want} and 0")
    return problems


async def collect(
    op: Callable[[int], Awaitable[float]], clients: int, each: int, max_seconds: float
) -> list[float]:
    """Runs `op(client)` `each` times per client (clients at once), after one
    unrecorded warm-up call each; stops early after `max_seconds` once every
    client has 5 samples (or 1 with 16 clients). Returns the sorted ms."""
    await asyncio.gather(*(op(c) for c in range(clients)))
    out: list[float] = []
    deadline = time.monotonic() + max_seconds
    least = 5 if clients == 1 else 1

    async def run(c: int) -> None:
        for i in range(each):
            if i >= least and time.monotonic() > deadline:
                return
            out.append(await op(c))

    await asyncio.gather(*(run(c) for c in range(clients)))
    return sorted(out)


def summary(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.5), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
    }


async def measure(
    target: SeededTarget, p: ScaleParams, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every operation of OPERATIONS on a started, seeded server."""
    seeded = target.seeded
    assert seeded is not None
    shape = seeded.shape
    probes = list(range(1, shape.probes + 1))
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        api = Api(target.url(""), session)
        await api.login(probes)
        problems = await check_seeded(api, seeded, target.port)
        out["check"] = problems or "ok"
        if problems:
            log(f"{target.name}: the server disagrees with the seeded data: {problems}")

        def user(c: int) -> int:
            return probes[c % len(probes)]

        async def one(key: str, op: Callable[[int], Awaitable[float]], clients: int) -> None:
            if key not in p.ops:
                return
            log(f"{target.name} {size_label(shape.messages)}: {key}")
            try:
                each = p.samples if clients == 1 else p.samples_each_of_16
                meter = Meter(target.pid)
                out[key] = summary(await collect(op, clients, each, p.op_seconds))
                out[key]["foreign_cores"] = meter.read()["foreign_cores"]
            except Exception as e:
                out[key] = {"error": f"{type(e).__name__}: {e}"}

        await one(
            "search_common",
            lambda c: api.timed("GET", f"/search?q={COMMON_WORD}", user(c)),
            1,
        )

        stop = asyncio.Event()

        async def searching(uid: int) -> None:
            while not stop.is_set():
                await api.timed("GET", f"/search?q={COMMON_WORD}", uid)

        busy = probes[1:3] if "history_during_search" in p.ops else []
        searchers = [asyncio.create_task(searching(uid)) for uid in busy]
        try:
            await one(
                "history_during_search",
                lambda c: api.timed("GET", f"/rooms/{BIG_ROOM}/messages?limit=50", user(c)),
                1,
            )
        finally:
            stop.set()
            await asyncio.gather(*searchers, return_exceptions=True)

        await one("search_rare", lambda c: api.timed("GET", f"/search?q={RARE_WORD}", user(c)), 1)

        names = iter(range(1, 1 << 30))
        await one(
            "rename_big_room",
            lambda c: api.timed(
                "PATCH", f"/rooms/{BIG_ROOM}", 1, {"name": f"big-room-{next(names)}"}
            ),
            1,
        )

        mismatches: list[str] = []

        async def resume(c: int) -> float:
            ms, events, want, gaps = await resume_once(
                "127.0.0.1", target.port, api.tokens[user(c)], shape.unread_per_probe_room
            )
            if events != want or gaps:
                mismatches.append(f"{events}/{want} events, {gaps} gaps")
            return ms

        await one("resume", resume, 1)
        await one("resume_16", resume, len(probes))
        if mismatches:
            out["resume_mismatches"] = mismatches[:5]
        await one("list_rooms", lambda c: api.timed("GET", "/rooms", user(c)), 1)
        await one("list_rooms_16", lambda c: api.timed("GET", "/rooms", user(c)), len(probes))

    if "send_ack_16" not in p.ops:
        return out
    log(f"{target.name} {size_label(shape.messages)}: send_ack_16")
    sink = Sink()
    rooms = [2 + i for i in range(len(probes))]  # probe rooms: every probe is in each
    creds = [(api.tokens[uid], room) for uid, room in zip(probes, rooms, strict=True)]
    try:
        clients = await open_clients(target, creds, rooms, sink)
        try:
            acks = await closed_loop_sends(target, clients, p.warmup, p.ack_seconds, p.quiet_wait)
        finally:
            close_clients(clients)
        out["send_ack_16"] = {
            "n": acks["acked"],
            "p50_ms": acks["ack_p50_ms"],
            "p99_ms": acks["ack_p99_ms"],
            "acked_per_s": acks["acked_per_s"],
            "errors": acks["errors"],
            "foreign_cores": acks["foreign_cores"],
        }
    except Exception as e:
        out["send_ack_16"] = {"error": f"{type(e).__name__}: {e}"}
    return out


async def run(
    engines: list[str], p: ScaleParams, workdir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """{engine: {size: figures}}: seeds, starts, checks and measures each in turn."""
    results: dict[str, Any] = {}
    for name in engines:
        for n in p.sizes:
            label = size_label(n)
            log(f"{name} {label}: seeding {n:,} messages")
            target = SeededTarget(name, workdir, Shape(messages=n))
            res: dict[str, Any] = {}
            results.setdefault(name, {})[label] = res
            try:
                await target.start()
                assert target.seeded is not None
                res["seed_s"] = target.seeded.seconds
                res["disk_mib"] = round(target.disk / 2**20, 1)
                res["disk_mib_per_million"] = round(target.disk / 2**20 / (n / 1e6), 1)
                log(f"{name} {label}: seeded in {target.seeded.seconds['total']} s")
                res.update(await measure(target, p, log))
            except Exception as e:
                res["error"] = f"{type(e).__name__}: {e}"
                log(f"{name} {label} FAILED: {e}\n{target.log_tail()}")
            finally:
                await target.stop()
    return results


# --- report ----------------------------------------------------------------------
def _cell(fig: Any) -> str:
    if not isinstance(fig, dict) or "p50_ms" not in fig:
        return "error" if isinstance(fig, dict) and "error" in fig else "—"
    return f"{fig['p50_ms']:.1f} / {fig['p99_ms']:.1f}"


def growth(results: dict[str, Any], engine: str, key: str, sizes: list[str]) -> float | None:
    first = results.get(engine, {}).get(sizes[0], {}).get(key, {})
    last = results.get(engine, {}).get(sizes[-1], {}).get(key, {})
    try:
        return round(last["p50_ms"] / first["p50_ms"], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def render(results: dict[str, Any], sizes: list[str]) -> str:
    """One row per operation and engine: p50 / p99 ms at each size, growth of
    p50 from the smallest size to the largest, and the issue's verdict."""
    head = ["operation", "engine", *(f"{s} p50 / p99 ms" for s in sizes), "p50 growth", "target"]
    table = [head]
    for key, label, clients in OPERATIONS:
        for engine in results:
            cells = [_cell(results[engine].get(s, {}).get(key)) for s in sizes]
            g = growth(results, engine, key, sizes)
            last = results[engine].get(sizes[-1], {}).get(key, {})
            verdict = ""
            if clients == 1 and isinstance(last, dict) and "p50_ms" in last and g is not None:
                ok = last["p50_ms"] < P50_LIMIT_MS and g <= GROWTH_LIMIT
                verdict = "PASS" if ok else "FAIL"
            table.append([label, engine, *cells, f"{g:.2f}x" if g else "—", verdict])
    for engine in results:
        table.append(
            [
                "disk MiB per million messages",
                engine,
                *(_fmt(results[engine].get(s, {}).get("disk_mib_per_million")) for s in sizes),
                "",
                "",
            ]
        )
        table.append(
            [
                "seed seconds (migrate + load)",
                engine,
                *(
                    _fmt((results[engine].get(s, {}).get("seed_s") or {}).get("total"))
                    for s in sizes
                ),
                "",
                "",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for i, row in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(widths[j]) if j < 2 else c.rjust(widths[j]) for j, c in enumerate(row)
            )
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = []
    for engine, by_size in results.items():
        for s, res in by_size.items():
            if res.get("check") not in (None, "ok"):
                notes.append(f"  {engine} {s}: seeded data check: {res['check']}")
            if "error" in res:
                notes.append(f"  {engine} {s}: {res['error']}")
            for key, _, _ in OPERATIONS:
                if isinstance(res.get(key), dict) and "error" in res[key]:
                    notes.append(f"  {engine} {s} {key}: {res[key]['error']}")
            noisy = [
                k
                for k, _, _ in OPERATIONS
                if ((res.get(k) or {}).get("foreign_cores") or 0) > NOISE_LIMIT
            ]
            if noisy:
                notes.append(
                    f"  {engine} {s}: other programs kept > {NOISE_LIMIT} cores busy during"
                    f" {len(noisy)} of {len(OPERATIONS)} operations (foreign_cores in the JSON)"
                )
            if res.get("resume_mismatches"):
                notes.append(f"  {engine} {s}: resume replays: {res['resume_mismatches']}")
    if notes:
        lines += ["", "notes:", *notes]
    lines.append("")
    lines.append(
        f"target: single-client p50 < {P50_LIMIT_MS:g} ms at {sizes[-1]} and p50 growth "
        f"{sizes[0]} -> {sizes[-1]} <= {GROWTH_LIMIT:g}x"
    )
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v)


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(parse_size(s) for s in text.split(",") if s.strip())
    if not sizes or any(n < 100 for n in sizes):
        raise SystemExit("--sizes: a comma list of message counts of 100 or more, e.g. 10k,300k,3M")
    return sizes


def parse_ops(text: str) -> tuple[str, ...]:
    ops = tuple(s.strip() for s in text.split(",") if s.strip())
    known = [key for key, _, _ in OPERATIONS]
    if not ops or any(op not in known for op in ops):
        raise SystemExit("--ops: a comma list of: " + ", ".join(known))
    return ops


def samples_note(p: ScaleParams) -> str:
    return (
        f"{p.samples} samples per operation (16 clients: {p.samples_each_of_16} each), "
        f"at most ~{math.ceil(p.op_seconds)} s each; sends {p.ack_seconds:g} s"
    )
