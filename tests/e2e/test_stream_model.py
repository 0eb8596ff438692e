"""A seeded, randomized model check of the room stream: two nodes, a misbehaving Redis.

Clients on both nodes send, edit, delete, join, leave, kick, add, and drop their
connection to come back later with `resume`, at random, while Redis is paused
(SIGSTOP), killed and restarted empty at random. The driver acts one step at a
time, so it knows the stream each room must have (one event per successful
action, in order); delivery runs concurrently with everything.

At the end: the stored stream is the model's; every client saw each room's
events in `pos` order, never twice, from its join to its removal (or to the end)
with nothing missing, never anything of a room while removed, and each message
as it is now wherever it saw the message's latest event.

CHAT_MODEL_SECONDS sets how long the random phase runs (default 20; give it
minutes by hand), CHAT_MODEL_SEED replays a run (the seed is printed, and named
in every failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from dataclasses import dataclass, field

import pytest

from ..helpers import Account
from ..helpers.cluster import Cluster, Node
from ..helpers.ws import MESSAGE_EVENTS, Recorder, event_key

pytestmark = pytest.mark.e2e

MODEL_SECONDS = float(os.environ.get("CHAT_MODEL_SECONDS", "20"))
USERS = 5  # user 0 owns every room and never leaves
PUBLIC_ROOMS, PRIVATE_ROOMS = 2, 1
# An away client comes back within this many steps (well under the 500-event replay).
MAX_AWAY_STEPS = 40
# How long the clients get to catch up once Redis behaves again.
SETTLE_SECONDS = 20.0


@dataclass
class Period:
    """One membership of a user in a room: from its join's pos to its removal's."""

    join: int
    leave: int | None = None
    open_at_leave: Recorder | None = None  # the connection the removal should reach


@dataclass
class Client:
    account: Account
    recorders: list[Recorder] = field(default_factory=list)
    current: Recorder | None = None
    away_since: int = 0
    seen: dict[int, int] = field(default_factory=dict)  # room -> last pos seen, for resume
    periods: dict[int, list[Period]] = field(default_factory=dict)
    resumes: list[tuple[float, float]] = field(default_factory=list)  # (sent, resumed)

    @property
    def id(self) -> int:
        return self.account.id


@dataclass
class Message:
    id: int
    room_id: int
    sender: int
    deleted: bool = False


class Model:
    def __init__(self, chat: Cluster, rng: random.Random) -> None:
        self.cluster = chat
        self.rng = rng
        self.nodes = [chat.one, chat.two]
        self.clients: list[Client] = []
        self.by_id: dict[int, Client] = {}
        self.public: list[int] = []
        self.private: list[int] = []
        self.members: dict[int, set[int]] = {}
        self.stream: dict[int, list[tuple[str, int]]] = {}  # room -> (type, subject) expected
        self.messages: list[Message] = []
        self.deleted_at: dict[int, float] = {}
        self.step = 0
        self.counts: dict[str, int] = {}

    def node(self) -> Node:
        return self.rng.choice(self.nodes)

    @property
    def owner(self) -> Client:
        return self.clients[0]

    def happened(self, room_id: int, kind: str, subject: int) -> int:
        """Records an event the model expects; returns its pos."""
        self.stream[room_id].append((kind, subject))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return len(self.stream[room_id])

    def joined(self, client: Client, room_id: int) -> None:
        pos = self.happened(room_id, "member.joined", client.id)
        self.members[room_id].add(client.id)
        client.periods.setdefault(room_id, []).append(Period(pos))
        client.seen[room_id] = pos

    def left(self, client: Client, room_id: int) -> None:
        pos = self.happened(room_id, "member.left", client.id)
        self.members[room_id].discard(client.id)
        period = client.periods[room_id][-1]
        period.leave, period.open_at_leave = pos, client.current

    # --- setup -----------------------------------------------------------------------

    async def setup(self) -> None:
        for i in range(USERS):
            account = await self.cluster.signup(self.nodes[i % 2], f"model{i}")
            self.clients.append(Client(account))
            self.by_id[account.id] = self.clients[-1]
        for i in range(PUBLIC_ROOMS + PRIVATE_ROOMS):
            kind = "public" if i < PUBLIC_ROOMS else "private"
            room_id = await self.cluster.room(self.owner.account, kind, f"model {i}")
            (self.public if kind == "public" else self.private).append(room_id)
            self.members[room_id], self.stream[room_id] = set(), []
            self.joined(self.owner, room_id)
        for client in self.clients[1:]:
            for room_id in self.public + self.private:
                if self.rng.random() < 0.6:
                    await (self.join if room_id in self.public else self.add)(client, room_id)
        for client in self.clients:
            await self.connect(client)

    # --- actions ---------------------------------------------------------------------

    async def call(self, client: Client, method: str, path: str, **kwargs) -> tuple[int, dict]:
        status, body = await self.node().call(method, path, client.account.access_token, **kwargs)
        assert status < 500, (method, path, status, body)
        return status, body

    async def send(self, client: Client, room_id: int) -> None:
        body = f"{client.id}:{room_id}:{self.step} {secrets.token_hex(3)}"
        if client.current is not None and self.rng.random() < 0.4:
            ref = f"s{self.step}"
            recorder = client.current
            await recorder.ws.send_json(
                {"type": "send", "room_id": room_id, "body": body, "ref": ref}
            )
            await recorder.wait_for(lambda r: r.has("ack", ref=ref), what=f"ack {ref}")
            message = next(f for f in recorder.of_type("ack") if f.get("ref") == ref)["message"]
        else:
            status, message = await self.call(
                client, "POST", f"/api/v1/rooms/{room_id}/messages", json={"body": body}
            )
            assert status == 201, message
        self.happened(room_id, "message.new", message["id"])
        self.messages.append(Message(message["id"], room_id, client.id))

    async def edit(self, message: Message, by: Client) -> None:
        path = f"/api/v1/rooms/{message.room_id}/messages/{message.id}"
        body = f"edited at {self.step} {secrets.token_hex(3)}"
        status, answer = await self.call(by, "PATCH", path, json={"body": body})
        if by.id in self.members[message.room_id]:
            assert status == 200, answer
            self.happened(message.room_id, "message.edited", message.id)
        else:
            assert status in (403, 404), answer  # a former member's edit is refused

    async def delete(self, message: Message, by: Client) -> None:
        path = f"/api/v1/rooms/{message.room_id}/messages/{message.id}"
        status, answer = await self.call(by, "DELETE", path)
        assert status == 204, answer
        message.deleted = True
        self.deleted_at[message.id] = time.monotonic()
        self.happened(message.room_id, "message.deleted", message.id)

    async def join(self, client: Client, room_id: int) -> None:
        status, room = await self.call(client, "POST", f"/api/v1/rooms/{room_id}/join")
        assert status == 200, room
        self.joined(client, room_id)

    async def add(self, client: Client, room_id: int) -> None:
        status, member = await self.call(
            self.owner, "POST", f"/api/v1/rooms/{room_id}/members", json={"user_id": client.id}
        )
        assert status == 201, member
        self.joined(client, room_id)

    async def leave(self, client: Client, room_id: int) -> None:
        status, body = await self.call(client, "POST", f"/api/v1/rooms/{room_id}/leave")
        assert status == 204, body
        self.left(client, room_id)

    async def kick(self, client: Client, room_id: int) -> None:
        status, body = await self.call(
            self.owner, "DELETE", f"/api/v1/rooms/{room_id}/members/{client.id}"
        )
        assert status == 204, body
        self.left(client, room_id)

    async def connect(self, client: Client) -> None:
        node = self.node()
        ws = await node.ws(client.account.access_token)
        label = f"user {client.id} connection {len(client.recorders)} on {node.base}"
        recorder = Recorder(ws, client.id, label=label)
        client.recorders.append(recorder)
        client.current = recorder
        rooms = {r: client.seen[r] for r in recorder.ready_pos if r in client.seen}
        sent = time.monotonic()
        await recorder.resume(rooms)
        client.resumes.append((sent, time.monotonic()))

    async def go_away(self, client: Client) -> None:
        assert client.current is not None
        recorder, client.current = client.current, None
        await recorder.close()
        for room_id, pos in recorder.high.items():
            client.seen[room_id] = max(client.seen.get(room_id, 0), pos)
        client.away_since = self.step
        self.counts["away"] = self.counts.get("away", 0) + 1

    # --- the random walk -------------------------------------------------------------

    async def act(self) -> None:
        """One random action that is valid in the model's state."""
        self.step += 1
        rng = self.rng
        for client in self.clients:  # nobody stays away long
            if client.current is None and self.step - client.away_since > MAX_AWAY_STEPS:
                await self.connect(client)
        client = rng.choice(self.clients)
        rooms = [r for r in self.members if client.id in self.members[r]]
        live = [m for m in self.messages if not m.deleted]
        roll = rng.random()
        if roll < 0.40 and rooms:
            await self.send(client, rng.choice(rooms))
        elif roll < 0.52 and live:
            message = rng.choice(live)
            await self.edit(message, self.by_id[message.sender])
        elif roll < 0.60 and live:
            message = rng.choice(live)
            sender = self.by_id[message.sender]
            by = sender if sender.id in self.members[message.room_id] else self.owner
            await self.delete(message, by)
        elif roll < 0.84 and client is not self.owner and client.current is not None:
            # Membership changes only for connected users: a user's rooms never change
            # while it is away, so its resume never reaches back past its own removal.
            await self.change_membership(client)
        elif client.current is not None:
            await self.go_away(client)
        else:
            await self.connect(client)

    async def change_membership(self, client: Client) -> None:
        room_id = self.rng.choice(self.public + self.private)
        if client.id in self.members[room_id]:
            await (self.kick if self.rng.random() < 0.5 else self.leave)(client, room_id)
        elif room_id in self.public:
            await self.join(client, room_id)
        else:
            await self.add(client, room_id)


async def chaos(redis, rng: random.Random, stop: asyncio.Event, log: list[str]) -> None:
    """Pauses Redis, or kills it and starts it again empty, at random, until `stop`."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.3, 2.0))
        if stop.is_set():
            return
        down = rng.uniform(0.3, 2.5)
        if rng.random() < 0.5:
            log.append(f"pause {down:.1f}s")
            redis.pause()
            try:
                await asyncio.sleep(down)
            finally:
                redis.unpause()
        else:
            log.append(f"kill {down:.1f}s")
            redis.stop()
            await asyncio.sleep(down)
            await asyncio.to_thread(redis.start)


# --- the checks ----------------------------------------------------------------------


def check_client(
    client: Client, stored: dict[int, list[dict]], model: Model, problems: list[str]
) -> None:
    """Everything one client received, across its connections, against the stored streams."""
    name = f"user {client.id}"
    for recorder in client.recorders:
        problems += recorder.violations
        if recorder.of_type("gap"):
            problems.append(f"{recorder.label}: unexpected gap {recorder.of_type('gap')}")
    final_pos = {}  # message id -> pos of its latest event, and its state now
    for events in stored.values():
        for event in events:
            if event["type"] in MESSAGE_EVENTS:
                final_pos[event["message"]["id"]] = (event["pos"], event["message"])
    for room_id, events in stored.items():
        received = [e for r in client.recorders for e in r.events.get(room_id, [])]
        positions = [e["pos"] for e in received]
        if positions != sorted(set(positions)):
            problems.append(f"{name} room {room_id}: out of order or twice: {positions}")
        got = set(positions)
        last_pos = len(events)
        for period in client.periods.get(room_id, []):
            end = period.leave if period.leave is not None else last_pos
            wanted = set(range(period.join + 1, end + 1))
            have = {p for p in got if period.join < p <= end}
            complete = period.leave is None or period.open_at_leave is client.current
            if complete and have != wanted:
                problems.append(
                    f"{name} room {room_id} member {period.join}..{period.leave}:"
                    f" missing {sorted(wanted - have)}"
                )
            elif have != set(range(period.join + 1, period.join + 1 + len(have))):
                problems.append(f"{name} room {room_id}: holes in {sorted(have)}")
            got -= have | {period.join}
        if got:
            problems.append(f"{name} room {room_id}: received while not a member: {sorted(got)}")
        by_pos = {e["pos"]: e for e in events}
        for event in received:
            if event["pos"] in by_pos and event_key(event) != event_key(by_pos[event["pos"]]):
                problems.append(
                    f"{name}: {event_key(event)} is stored as {event_key(by_pos[event['pos']])}"
                )
            if event["type"] in MESSAGE_EVENTS:
                pos, now = final_pos[event["message"]["id"]]
                mine = event["message"]
                if pos == event["pos"] and (mine["body"], mine["deleted"], mine["edited_at"]) != (
                    now["body"],
                    now["deleted"],
                    now["edited_at"],
                ):
                    problems.append(f"{name}: message {mine['id']} is {mine}, stored {now}")
    deleted: set[int] = set()
    for recorder in client.recorders:
        for at, frame in recorder.frames:
            message = frame.get("message")
            if not isinstance(message, dict):
                continue
            if frame["type"] == "message.deleted":
                deleted.add(message["id"])
            gone_at = model.deleted_at.get(message["id"])
            in_replay = gone_at is not None and any(
                gone_at < sent and sent <= at <= done for sent, done in client.resumes
            )
            if message["body"] and (message["id"] in deleted or in_replay):
                problems.append(f"{name}: text of deleted message {message['id']}: {frame}")


async def test_random_walk_against_the_model(cluster):
    seed = int(os.environ.get("CHAT_MODEL_SEED") or secrets.randbits(32))
    print(f"CHAT_MODEL_SEED={seed}")
    rng = random.Random(seed)
    model = Model(cluster, rng)
    await model.setup()
    stop, chaos_log = asyncio.Event(), []
    troublemaker = asyncio.create_task(
        chaos(cluster.redis, random.Random(seed + 1), stop, chaos_log)
    )
    try:
        deadline = time.monotonic() + MODEL_SECONDS
        while time.monotonic() < deadline:
            await model.act()
    finally:
        stop.set()
        await troublemaker
    context = f"seed {seed}, {model.step} steps {model.counts}, Redis: {chaos_log}"
    print(context)
    try:
        for client in model.clients:
            if client.current is None:
                await model.connect(client)
        for client in model.clients:
            for room_id, periods in client.periods.items():
                period = periods[-1]
                if period.leave is None:
                    last = len(model.stream[room_id])
                elif period.open_at_leave is client.current:
                    last = period.leave  # its removal must reach the connection it had
                else:
                    continue
                await client.current.wait_pos(room_id, last, SETTLE_SECONDS)
    except AssertionError as exc:
        raise AssertionError(f"{context}: {exc}") from None
    stored = {
        room_id: await cluster.events(model.owner.account, room_id) for room_id in model.stream
    }
    for room_id, events in stored.items():
        assert [e["pos"] for e in events] == list(range(1, len(events) + 1)), context
        assert [event_key(e)[1:] for e in events] == model.stream[room_id], context
    problems: list[str] = []
    for client in model.clients:
        check_client(client, stored, model, problems)
    assert not problems, f"{context}:\n" + "\n".join(problems[:50])
