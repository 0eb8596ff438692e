"""The relay's outbox: bounded in bytes, dropping the oldest notifications first."""

from __future__ import annotations

from chat_server import events
from chat_server.observability import Metrics
from chat_server.realtime import relay
from chat_server.realtime.relay import Published, Relay, decode


async def test_a_full_outbox_drops_the_oldest_and_counts_them(monkeypatch):
    monkeypatch.setattr(relay, "OUTBOX_BYTES", 64 * 1024)
    metrics = Metrics()
    # Never started: nothing is published, so notifications pile up as while Redis stalls.
    outbox = Relay("redis://127.0.0.1:1/0", metrics)
    body = "x" * 1000
    sent = 500
    for n in range(sent):
        payload = events.member_left(1, n + 1, {"id": 2, "body": body}, "left")
        outbox.send(Published(events.room_event(payload, removes=2)))
    assert outbox.outbox_bytes <= relay.OUTBOX_BYTES
    assert outbox.outbox_bytes == sum(len(text) for text in outbox.outbox)
    kept = [decode(text.encode())[2] for text in outbox.outbox]
    positions = [message.event.pos for message in kept if isinstance(message, Published)]
    assert positions == list(range(sent - len(positions) + 1, sent + 1))  # the newest, in order
    sample = metrics.registry.get_sample_value
    assert sample("chat_relay_dropped_total") == sent - len(positions) > 0
    assert sample("chat_relay_bytes_queued") == outbox.outbox_bytes
    await outbox.close()
