"""Browser tests of the web client's bots and integrations (issue 17).

A real `python run.py` on SQLite and on PostgreSQL (open registration,
CHAT_OUTBOUND_PRIVATE=true so an outgoing webhook may call a receiver on
127.0.0.1 that the test runs) and Debian's chromium: personal access tokens
and bots on the Profile dialog, and incoming and outgoing webhooks in Room
settings, each checked by using what the page handed over. Controls are
found by role and accessible name (API.md "Built-in web client").
Screenshots go to tests/helpers/browser.SHOTS.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import re
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, close_all, new_user, rest, shots_dir
from ..helpers.servers import ServerProcess, engine_env

pytestmark = pytest.mark.e2e

SHOTS = shots_dir("integrations")
PERSONAL_TOKEN = re.compile(r"^chat_pat_\S+$")


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def _status(url: str, token: str | None = None, body: Any = None) -> int:
    """The HTTP status of a GET (or, with a body, a POST) to a full URL."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class Site:
    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        return rest(self.url, method, path, token, body)

    def sign_up(self, display_name: str) -> tuple[str, str]:
        """A new account: (username, access token)."""
        username = _unique(display_name.split()[0].lower())
        body = {"username": username, "password": PASSWORD, "display_name": display_name}
        return username, self.call("POST", "/auth/signup", body=body)["access_token"]

    def me_status(self, token: str) -> int:
        return _status(f"{self.url}/api/v1/users/me", token)


class Receiver:
    """An outgoing webhook's target on 127.0.0.1: records each delivery (its
    headers and raw body) and answers with a reply for the room."""

    def __init__(self) -> None:
        self.deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        deliveries = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                deliveries.put(({k.lower(): v for k, v in self.headers.items()}, raw))
                body = json.loads(raw)["message"]["body"]
                reply = json.dumps({"text": f"echo: {body}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/chat-hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp(f"web-integrations-{request.param}")
    with engine_env(request.param, request, workdir / "data") as env:
        server = ServerProcess(env | {"CHAT_OUTBOUND_PRIVATE": "true"}, workdir).start()
        try:
            yield Site(server)
        finally:
            server.stop()


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[[str, str], WebUser]]:
    users: list[WebUser] = []

    def make(label: str, base_url: str) -> WebUser:
        users.append(new_user(browser, base_url, label))
        return users[-1]

    yield make
    close_all(users)


def _copy(user: WebUser, scope: Locator, field: Locator) -> str:
    """Copies a shown secret with its Copy button; the clipboard's text."""
    value = field.input_value()
    scope.get_by_role("button", name="Copy", exact=True).click()
    expect(scope.get_by_text("Copied.")).to_be_visible()
    copied = user.page.evaluate("navigator.clipboard.readText()")
    assert copied == value
    return copied


def test_access_token_created_copied_used_and_revoked(
    site: Site, people: Callable[[str, str], WebUser]
) -> None:
    ann_name, _ = site.sign_up("Ann Api")
    ann = people("ann", site.url)
    ann.log_in(ann_name)
    opener = ann.page.get_by_role("button", name="Profile")
    opener.click()
    profile = ann.dialog("Profile")
    tokens = profile.get_by_role("region", name="Access tokens")
    expect(tokens.get_by_text("No tokens yet.")).to_be_visible()
    tokens.get_by_role("textbox", name="Token name").fill("deploy script")
    tokens.get_by_role("combobox", name="Expires").select_option(label="30 days")
    tokens.get_by_role("button", name="Create token").click()

    # Shown once, with Copy focused and the warning as its description.
    new_token = tokens.get_by_role("textbox", name="Your new token")
    expect(new_token).to_have_value(PERSONAL_TOKEN)
    copy = tokens.get_by_role("button", name="Copy", exact=True)
    expect(copy).to_be_focused()
    expect(copy).to_have_accessible_description("Copy it now: it will not be shown again.")
    token = _copy(ann, tokens, new_token)
    entry = tokens.get_by_role("list", name="Your tokens").get_by_role("listitem")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("deploy script")
    expect(entry).to_contain_text("never used")
    expect(entry).to_contain_text(re.compile(r"expires \S"))
    ann.shot(SHOTS / "integ-token-created.png")

    # The copied token works for REST, as Ann.
    assert site.call("GET", "/users/me", token)["username"] == ann_name
    ann.page.keyboard.press("Escape")
    expect(profile).to_be_hidden()
    expect(opener).to_be_focused()

    # Opened again: the token is not shown any more, and it has been used.
    opener.click()
    expect(tokens.get_by_role("textbox", name="Your new token")).to_have_count(0)
    expect(entry).to_contain_text("last used")
    entry.get_by_role("button", name="Revoke").click()
    expect(ann.page.get_by_text("Revoke the token “deploy script”?")).to_be_visible()
    ann.confirm()
    expect(tokens.get_by_text("No tokens yet.")).to_be_visible()
    expect(tokens.get_by_role("textbox", name="Token name")).to_be_focused()
    ann.shot(SHOTS / "integ-token-revoked.png")
    assert site.me_status(token) == 401


def test_bot_created_used_and_deleted(site: Site, people: Callable[[str, str], WebUser]) -> None:
    ben_name, _ = site.sign_up("Ben Builder")
    ben = people("ben", site.url)
    ben.log_in(ben_name)
    ben.page.get_by_role("button", name="Profile").click()
    bots = ben.dialog("Profile").get_by_role("region", name="Bots")
    expect(bots.get_by_text("No bots yet.")).to_be_visible()
    bot_name = _unique("buildbot")
    bots.get_by_role("textbox", name="Bot username").fill(bot_name)
    bots.get_by_role("textbox", name="Bot name").fill("Build Bot")
    bots.get_by_role("button", name="Create bot").click()
    bot_token = _copy(ben, bots, bots.get_by_role("textbox", name="Bot token"))
    assert PERSONAL_TOKEN.match(bot_token)
    entry = bots.get_by_role("list", name="Your bots").get_by_role("listitem")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(f"Build Bot @{bot_name}")
    bot = site.call("GET", "/users/me", bot_token)
    assert (bot["username"], bot["is_bot"]) == (bot_name, True)

    # A taken username is refused, naming the field, which takes focus.
    username = bots.get_by_role("textbox", name="Bot username")
    username.fill(bot_name)
    bots.get_by_role("button", name="Create bot").click()
    expect(bots.get_by_role("alert").filter(has_text="Bot username:")).to_be_visible()
    expect(username).to_have_attribute("aria-invalid", "true")
    expect(username).to_be_focused()
    ben.shot(SHOTS / "integ-bot-created.png")
    ben.page.keyboard.press("Escape")

    # Added to a room by its username, the bot posts there with its token.
    room = _unique("builds")
    ben.create_room(room)
    ben.page.get_by_role("button", name="Room settings").click()
    settings = ben.dialog("Room settings")
    settings.get_by_role("textbox", name="Username").fill(bot_name)
    settings.get_by_role("button", name="Invite", exact=True).click()
    expect(settings.get_by_text("Build Bot was added to the room.")).to_be_visible()
    members = settings.get_by_role("list", name="Members").get_by_role("listitem")
    expect(members.filter(has_text=f"@{bot_name}")).to_contain_text("bot")
    ben.page.keyboard.press("Escape")
    room_id = next(r["id"] for r in site.call("GET", "/rooms", bot_token)["items"])
    site.call("POST", f"/rooms/{room_id}/messages", bot_token, {"body": "nightly build is green"})
    expect(ben.articles("nightly build is green")).to_contain_text("Build Bot")

    # Signed in with the bot's token, the page offers neither tokens nor bots.
    as_bot = people("bot", site.url)
    as_bot.page.goto("/")
    session = {"access_token": bot_token, "refresh_token": "", "expires_at": 2**52}
    as_bot.page.evaluate(
        "session => localStorage.setItem('chat.session', JSON.stringify(session))", session
    )
    as_bot.page.reload()
    as_bot.expect_signed_in()
    as_bot.page.get_by_role("button", name="Profile").click()
    bot_profile = as_bot.dialog("Profile")
    expect(bot_profile.get_by_role("textbox", name="Display name")).to_have_value("Build Bot")
    expect(bot_profile.get_by_role("region")).to_have_count(0)

    ben.page.get_by_role("button", name="Profile").click()
    entry.get_by_role("button", name="Delete").click()
    expect(ben.page.get_by_text("Delete the bot Build Bot?")).to_be_visible()
    ben.confirm()
    expect(bots.get_by_text("No bots yet.")).to_be_visible()
    assert site.me_status(bot_token) == 401


def test_incoming_and_outgoing_webhooks_in_room_settings(
    site: Site, people: Callable[[str, str], WebUser]
) -> None:
    olga_name, _ = site.sign_up("Olga Owner")
    olga = people("olga", site.url)
    olga.log_in(olga_name)
    room = _unique("ops")
    olga.create_room(room)
    olga.page.get_by_role("button", name="Room settings").click()
    settings = olga.dialog("Room settings")
    webhooks = settings.get_by_role("region", name="Webhooks")
    expect(webhooks.get_by_text("No webhooks yet.")).to_be_visible()

    # An incoming webhook: its URL (with Copy and a curl example) posts as its bot.
    incoming = webhooks.get_by_role("group", name="New incoming webhook")
    incoming.get_by_role("textbox", name="Webhook name").fill("CI alerts")
    webhooks.get_by_role("button", name="Create incoming webhook").click()
    hook_field = webhooks.get_by_role("textbox", name="Hook URL", exact=True)
    expect(hook_field).to_have_value(re.compile(rf"^{re.escape(site.url)}/api/v1/hooks/\S+$"))
    hook_url = _copy(olga, webhooks.locator(".secret-box").first, hook_field)
    body = json.dumps({"text": "hello"}, separators=(",", ":"))
    curl = f"curl -X POST -H 'Content-Type: application/json' -d '{body}' {hook_url}"
    expect(webhooks.locator("pre")).to_have_text(curl)
    hooks = webhooks.get_by_role("list", name="Webhooks").get_by_role("listitem")
    alerts = hooks.filter(has_text="CI alerts")
    expect(alerts).to_contain_text("incoming")
    expect(alerts.get_by_role("textbox", name="Hook URL of CI alerts")).to_have_value(hook_url)
    # Its bot joined the room.
    members = settings.get_by_role("list", name="Members").get_by_role("listitem")
    expect(members.filter(has_text="CI alerts")).to_contain_text("bot")
    olga.shot(SHOTS / "integ-incoming-webhook.png")

    assert _status(hook_url, body={"text": "build 42 passed"}) == 201
    posted = olga.articles("build 42 passed")
    expect(posted).to_have_count(1)
    expect(posted).to_contain_text("CI alerts")

    # An outgoing webhook to a receiver here: a message goes out signed, and
    # the receiver's reply comes back as the webhook's bot.
    with Receiver() as receiver:
        outgoing = webhooks.get_by_role("group", name="New outgoing webhook")
        outgoing.get_by_role("textbox", name="Webhook name").fill("Echo")
        outgoing.get_by_role("textbox", name="URL").fill(receiver.url)
        outgoing.get_by_role("combobox", name="Trigger").select_option(label="All messages")
        webhooks.get_by_role("button", name="Create outgoing webhook").click()
        secret_field = webhooks.get_by_role("textbox", name="Signing secret", exact=True)
        expect(secret_field).to_have_value(re.compile(r"\S{16,}"))
        secret = secret_field.input_value()
        echo = hooks.filter(has_text="Echo")
        expect(echo).to_contain_text(f"To {receiver.url}")
        expect(echo).to_contain_text("All messages · no deliveries yet · 0 failed deliveries")
        olga.shot(SHOTS / "integ-outgoing-webhook.png")
        olga.page.keyboard.press("Escape")
        expect(settings).to_be_hidden()

        olga.send("deploy to staging please")
        headers, raw = receiver.deliveries.get(timeout=20)
        assert headers["x-chat-event"] == "message.new"
        expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["x-chat-signature"] == f"sha256={expected}"
        assert json.loads(raw)["message"]["body"] == "deploy to staging please"
        reply = olga.articles("echo: deploy to staging please")
        expect(reply).to_have_count(1)
        expect(reply).to_contain_text("Echo")
        olga.shot(SHOTS / "integ-outgoing-reply.png")

    # The list tells of the delivery; deleting the webhooks takes them and
    # their bots away, and the incoming URL stops working.
    olga.page.get_by_role("button", name="Room settings").click()
    expect(echo).to_contain_text("last delivery")
    echo.get_by_role("button", name="Delete").click()
    olga.confirm()
    expect(echo).to_have_count(0)
    expect(members.filter(has_text="Echo")).to_have_count(0)
    alerts.get_by_role("button", name="Delete").click()
    expect(olga.page.get_by_text("its URL stops working")).to_be_visible()
    olga.confirm()
    expect(webhooks.get_by_text("No webhooks yet.")).to_be_visible()
    olga.shot(SHOTS / "integ-webhooks-deleted.png")
    assert _status(hook_url, body={"text": "anyone there?"}) == 404


def test_refused_outgoing_url_names_the_field(
    tmp_path: Path, people: Callable[[str, str], WebUser]
) -> None:
    # The default CHAT_OUTBOUND_PRIVATE=false: loopback targets are refused.
    server = ServerProcess({"CHAT_DATA_DIR": str(tmp_path / "data")}, tmp_path).start()
    try:
        site = Site(server)
        name, _ = site.sign_up("Rita Refused")
        rita = people("rita", site.url)
        rita.log_in(name)
        rita.create_room(_unique("intranet"))
        rita.page.get_by_role("button", name="Room settings").click()
        webhooks = rita.dialog("Room settings").get_by_role("region", name="Webhooks")
        outgoing = webhooks.get_by_role("group", name="New outgoing webhook")
        outgoing.get_by_role("textbox", name="Webhook name").fill("Internal")
        url = outgoing.get_by_role("textbox", name="URL")
        url.fill("http://127.0.0.1:9/hook")
        webhooks.get_by_role("button", name="Create outgoing webhook").click()
        expect(webhooks.get_by_role("alert").filter(has_text="URL:")).to_be_visible()
        expect(url).to_have_attribute("aria-invalid", "true")
        expect(url).to_be_focused()
        expect(webhooks.get_by_text("No webhooks yet.")).to_be_visible()
        rita.shot(SHOTS / "integ-outgoing-refused.png")
    finally:
        server.stop()
