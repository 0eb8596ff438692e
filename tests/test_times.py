"""Times on the wire: `models.iso` formats epoch milliseconds as API.md's UTC timestamps."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from chat_server.models import iso


def test_iso_matches_datetime_formatting_at_every_millisecond_boundary():
    epoch = datetime(1970, 1, 1)
    rng = random.Random(20261128)
    samples = [0, 1, 999, 1000, 1001, -1, -999, -1000, -1001, 1764344640123, 253402300799999]
    samples += [rng.randrange(-(10**12), 2 * 10**12) for _ in range(20_000)]
    for ms in samples:
        expected = (epoch + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"
        assert iso(ms) == expected, ms
    assert iso(None) is None
