"""A typed Python client generates from the served OpenAPI document without a warning.

openapi-python-client drops what it cannot model (an `anyOf` body, a response
without a usable schema) and says so only in a warning, so any warning fails.
It runs offline: it only reads the document and writes code into a tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from chat_server import create_app

from .helpers import make_config

# The generator decodes only JSON, text and application/octet-stream bodies; media
# and thumbnails are bytes of whatever type was sniffed, which a client takes as a file.
# No post hooks: formatting the generated code with ruff (its default) is not what
# is tested, and ruff may not be on the PATH.
GENERATOR_CONFIG = {
    "content_type_overrides": {
        media_type: "application/octet-stream"
        for media_type in ("*/*", "image/png", "image/jpeg", "image/webp")
    },
    "post_hooks": [],
}


async def test_generated_python_client_has_no_warnings(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(tmp_path, f"sqlite:///{tmp_path}/c.db")))
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    document = tmp_path / "openapi.json"
    document.write_bytes(await response.read())
    config = tmp_path / "generator.json"
    config.write_text(json.dumps(GENERATOR_CONFIG))
    out = tmp_path / "client"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(document),
        "--config",
        str(config),
        "--meta",
        "none",
        "--output-path",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 120)
    output = stdout.decode()
    assert process.returncode == 0, output
    assert "warning" not in output.lower() and "error" not in output.lower(), output
    # The send body is one typed model, and media downloads are kept (as files).
    send_model = (out / "models" / "message_send_request.py").read_text()
    assert "body: str | Unset" in send_model and "attachments: list[int] | Unset" in send_model
    download = (out / "api" / "media" / "media_get.py").read_text()
    assert "response_200 = File(" in download and "response_206 = File(" in download
    thumbnail = (out / "api" / "media" / "media_thumbnail.py").read_text()
    assert "response_200 = File(" in thumbnail
