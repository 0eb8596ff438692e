"""Peer baseline: the same room broadcast on python-socketio's ``AsyncServer``
in aiohttp mode (what many Python chat servers are built on).

Events: ``join`` ``{"room_id"}`` (acknowledged), ``send`` ``{"room_id", "body",
"client_id"?}`` -> ``message.new`` ``{"message": {...}}`` emitted to the room,
``ping`` -> ``pong``. The load generator speaks the raw Engine.IO v4 /
Socket.IO v5 wire protocol over the websocket transport.
Run: ``python -m bench.peer_server --port 8101 [--uvloop]``.
"""

from __future__ import annotations

import itertools

import socketio
from aiohttp import web

from bench.ceiling_server import next_message, serve


def make_app() -> web.Application:
    # Heartbeat as Socket.IO's defaults (25 s interval): the generator answers
    # the server's "2" with "3".
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    seqs: dict[int, int] = {}
    ids = itertools.count(1)

    @sio.event
    async def join(sid: str, data: dict) -> bool:
        await sio.enter_room(sid, str(int(data["room_id"])))
        return True

    @sio.event
    async def send(sid: str, data: dict) -> None:
        rid = int(data["room_id"])
        message = next_message(data, rid, seqs, ids)
        await sio.emit("message.new", {"message": message}, room=str(rid))

    @sio.event
    async def ping(sid: str, data: object = None) -> None:
        await sio.emit("pong", {}, to=sid)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    serve(make_app, 8101)


if __name__ == "__main__":
    main()
