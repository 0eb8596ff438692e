"""Operations routes, the error shape for aiohttp's own errors, and the OpenAPI document."""

from __future__ import annotations

import json
import re

from aiohttp import web

from chat_server import Config, create_app
from chat_server.app import WEB_DIR, openapi_paths

from .helpers import error_of, make_config

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


async def test_health_and_ready(client):
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    assert await (await client.get("/readyz")).json() == {"status": "ok"}


async def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    assert (await error_of(await client.get("/api/v1/nope"), 404))["code"] == "not_found"
    wrong = await client.put("/api/v1/auth/signup")
    assert (await error_of(wrong, 405))["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


async def test_openapi_document_is_served(client):
    response = await client.get("/api/v1/openapi.json")
    document = await response.json()
    assert document["openapi"].startswith("3.1")


def _registered_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path is None:  # static files of the web client
            continue
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            routes.add((route.method.lower(), path))
    return routes


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path):
    documented = {
        (method, path)
        for path, operations in openapi_paths().items()
        for method in operations
        if method in METHODS
    }
    registered = _registered_routes(create_app(Config(data_dir=tmp_path)))
    assert registered - documented == set(), "routes missing from openapi.json"
    assert documented - registered == set(), "documented routes that are not registered"
    for _, path in documented:
        assert re.fullmatch(r"/[a-z0-9_./{}-]*", path), path


async def test_cors_only_for_allowed_origins(aiohttp_client, tmp_path, database_url):
    config = make_config(tmp_path, database_url, allowed_origins=("https://chat.example",))
    client = await aiohttp_client(create_app(config))
    preflight = await client.options(
        "/api/v1/users/me",
        headers={
            "Origin": "https://chat.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://chat.example"
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    simple = await client.get("/healthz", headers={"Origin": "https://chat.example"})
    assert simple.headers["Access-Control-Allow-Origin"] == "https://chat.example"
    assert "Retry-After" in simple.headers["Access-Control-Expose-Headers"]
    foreign = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    foreign_preflight = await client.options(
        "/api/v1/users/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"},
    )
    assert foreign_preflight.status == 405
    assert "Access-Control-Allow-Origin" not in foreign_preflight.headers


async def test_the_service_worker_is_served_from_the_root(client):
    """At /sw.js (a worker controls only the pages under its own path), as the
    JavaScript the OpenAPI document says, with the web client's CSP."""
    response = await client.get("/sw.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "addEventListener('push'" in await response.text()


def _free_strings(node: object, where: str) -> list[str]:
    """Paths of plain `type: string` schemas (no Text, pattern, enum or format) under node."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "enum", "format", "$ref"} & set(node):
            found.append(where)
        for key, value in node.items():
            found += _free_strings(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _free_strings(value, f"{where}/{index}")
    return found


def test_every_string_a_request_sends_is_documented_without_nul():
    """The server refuses NUL in every string it receives (400 naming the field),
    so each request's text is `Text` in the document (or narrower): clients and
    the API fuzzer generate only what is accepted."""
    schemas = json.loads((WEB_DIR.parent / "openapi.json").read_text())["components"]["schemas"]
    free = [
        path
        for name, schema in schemas.items()
        if name.endswith("Request")
        for path in _free_strings(schema, name)
    ]
    assert free == []
