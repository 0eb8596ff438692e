"""Ceiling baseline: the cheapest honest aiohttp WebSocket room broadcast.

No auth, no database. ``GET /ws?room=<id>`` joins a room and answers
``{"type": "ready"}``. A ``send`` frame is parsed, stamped with the room's next
seq, serialized once into the same ``message.new`` shape our server sends, and
written to every socket in the room (the sender's included). ``ping`` answers
``pong``. Run: ``python -m bench.ceiling_server --port 8100 [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import WSMsgType, web

ROOMS = web.AppKey("rooms", dict)
SEQS = web.AppKey("seqs", dict)
IDS = web.AppKey("ids", itertools.count)


def _iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def next_message(
    frame: dict[str, Any], room_id: int, seqs: dict[int, int], ids: Iterator[int]
) -> dict[str, Any]:
    """The Message object (API.md's shape) a baseline builds for a `send`: next seq
    of the room, next id. Shared by both baselines so they do the same work."""
    seq = seqs[room_id] = seqs.get(room_id, 0) + 1
    return {
        "id": next(ids),
        "room_id": room_id,
        "seq": seq,
        "sender_id": 1,
        "body": frame["body"],
        "client_id": frame.get("client_id"),
        "reply_to": None,
        "attachments": [],
        "created_at": _iso_now(),
        "edited_at": None,
        "deleted": False,
    }


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    room_id = int(request.query.get("room", "1"))
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    rooms: dict[int, set[web.WebSocketResponse]] = request.app[ROOMS]
    seqs: dict[int, int] = request.app[SEQS]
    ids = request.app[IDS]
    members = rooms[room_id]
    members.add(ws)
    try:
        await ws.send_str('{"type":"ready"}')
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "send":
                rid = int(frame["room_id"])
                message = next_message(frame, rid, seqs, ids)
                data = json.dumps(
                    {"type": "message.new", "message": message}, separators=(",", ":")
                )
                for peer in list(rooms.get(rid, ())):
                    if not peer.closed:
                        await peer.send_str(data)
            elif kind == "ping":
                await ws.send_str('{"type":"pong"}')
    finally:
        members.discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app[ROOMS] = defaultdict(set)
    app[SEQS] = {}
    app[IDS] = itertools.count(1)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


def serve(make_app: Callable[[], web.Application], default_port: int) -> None:
    """Command line of a baseline server: --host, --port, --uvloop."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=default_port)
    ap.add_argument("--uvloop", action="store_true")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        loop=loop,
    )


def main() -> None:
    serve(make_app, 8100)


if __name__ == "__main__":
    main()
