"""Browser tests of the web client's notifications (issue 16): the "Enable
notifications" prompt and the Web Push subscription, the service worker's
notification, the per-room `Notifications` control, the unread count in the
title and favicon, and the page's own notification while its tab is hidden.

A real `python run.py` (open registration, CHAT_OUTBOUND_PRIVATE=true, on SQLite
and on PostgreSQL), Debian's chromium under Playwright, and the real push
receiver of tests/helpers/push.py (VAPID JWT checked, payload decrypted) on
127.0.0.1, run on an event loop of its own in a thread.

What headless Chromium cannot do, and what stands in for it:
- it has no push service: `pushManager.subscribe` fails with "Registration
  failed - permission denied". Where a test needs a subscription, an init script
  replaces `PushManager.subscribe`/`getSubscription` with one that returns the
  receiver's subscriber (endpoint and keys, as `toJSON()` gives them); the app's
  code around it (prompt, permission, worker registration, POST, sign-out
  DELETE) runs unchanged. The push the server then sends is decrypted by the
  receiver and handed to the real service worker with the DevTools protocol's
  `ServiceWorker.deliverPushMessage`.
- every page stays visible: a hidden tab is played by overriding
  `document.hidden`/`visibilityState` and firing `visibilitychange`.
- a notification a page shows through its worker registration is sometimes
  dropped at once (`getNotifications()` empty as soon as `showNotification()`
  has resolved): the hidden-tab test reads what the page asked to show from a
  wrapper around `showNotification` that then calls it.
Screenshots go to tests/helpers/browser.SHOTS.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    CDPSession,
    ConsoleMessage,
    Page,
    expect,
)

from ..helpers import PASSWORD, Account
from ..helpers.browser import WebUser, rest, shots_dir
from ..helpers.push import PushReceiver, Subscriber, push_receiver
from ..helpers.servers import ServerProcess, engine_env
from ..helpers.ws import connect, next_of

pytestmark = pytest.mark.e2e

SHOTS = shots_dir("notifications")
CONSOLE: list[str] = []  # the pages' console, for failure messages
T = TypeVar("T")

# PushManager as a browser with a push service would behave, for the one
# subscriber given: subscribe() records its options and returns the
# subscription, getSubscription() returns it until unsubscribe().
FAKE_PUSH_MANAGER = """(subscription) => {
  let current = null;
  const bytes = (key) => new Uint8Array(key instanceof ArrayBuffer ? key : key.buffer);
  PushManager.prototype.subscribe = async function (options) {
    const key = bytes(options.applicationServerKey);
    window.pushOptions = {
      userVisibleOnly: options.userVisibleOnly,
      key: btoa(String.fromCharCode(...key))
        .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, ''),
    };
    current = {
      endpoint: subscription.endpoint,
      options: { userVisibleOnly: true, applicationServerKey: key.slice().buffer },
      toJSON: () => ({
        endpoint: subscription.endpoint, expirationTime: null, keys: subscription.keys,
      }),
      unsubscribe: async () => {
        current = null;
        window.pushUnsubscribed = true;
        return true;
      },
    };
    return current;
  };
  PushManager.prototype.getSubscription = async function () {
    return current;
  };
}"""

# The page as a hidden tab (headless pages are always visible).
HIDE_TAB = """() => {
  const fixed = (value) => ({ configurable: true, get: () => value });
  Object.defineProperty(Document.prototype, 'hidden', fixed(true));
  Object.defineProperty(Document.prototype, 'visibilityState', fixed('hidden'));
  document.dispatchEvent(new Event('visibilitychange'));
}"""

# Records what the page asks its service worker to show, then shows it:
# headless Chromium sometimes drops a notification shown from a page at once
# (getNotifications() is empty as soon as showNotification() resolves), so
# what the page asked for is read from here.
RECORD_PAGE_NOTIFICATIONS = """() => {
  window.pageNotifications = [];
  const show = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
    const { body, tag, data } = options;
    window.pageNotifications.push({ title, body, tag, data });
    return show.call(this, title, options);
  };
}"""

WORKER_NOTIFICATIONS = """async () => {
  const registration = await navigator.serviceWorker.getRegistration('/');
  const shown = registration ? await registration.getNotifications() : [];
  return shown.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
}"""


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


class ReceiverThread:
    """The async push receiver on an event loop of its own, for sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.receiver: PushReceiver

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def subscriber(self, name: str) -> Subscriber:
        async def make() -> Subscriber:
            return self.receiver.subscriber(name)

        return self.run(make())

    def next_push(self) -> dict[str, Any]:
        return self.run(self.receiver.next_push(timeout=15)).payload

    def __enter__(self) -> ReceiverThread:
        self.thread.start()
        self.context = push_receiver()
        self.receiver = self.run(self.context.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self.context.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class Site:
    def __init__(self, server: ServerProcess, receiver: ReceiverThread) -> None:
        self.server = server
        self.receiver = receiver
        self.vapid_key = rest(server.url, "GET", "/server")["vapid_public_key"]
        assert self.vapid_key
        receiver.receiver.server_key = self.vapid_key

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        return rest(self.url, method, path, token, body)

    def account(self, display_name: str) -> Account:
        username = _unique(display_name.split()[0].lower())
        auth = self.call(
            "POST",
            "/auth/signup",
            body={"username": username, "password": PASSWORD, "display_name": display_name},
        )
        return Account(auth["user"], auth["access_token"], auth["refresh_token"])

    def token(self, username: str) -> str:
        body = {"username": username, "password": PASSWORD}
        return self.call("POST", "/auth/login", body=body)["access_token"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp(f"web-notify-{request.param}")
    with (
        ReceiverThread() as receiver,
        engine_env(request.param, request, workdir / "data") as env,
    ):
        server = ServerProcess(env | {"CHAT_OUTBOUND_PRIVATE": "true"}, workdir).start()
        try:
            yield Site(server, receiver)
        finally:
            server.stop()


@pytest.fixture
def contexts(browser: Browser, site: Site) -> Iterator[Callable[..., BrowserContext]]:
    made: list[BrowserContext] = []

    def make(
        granted: bool = False, push_as: Subscriber | None = None, record: bool = False
    ) -> BrowserContext:
        context = browser.new_context(base_url=site.url, viewport={"width": 1100, "height": 760})
        if record:
            context.add_init_script(f"({RECORD_PAGE_NOTIFICATIONS})()")
        if granted:
            context.grant_permissions(["notifications"], origin=site.url)
        if push_as is not None:
            context.add_init_script(f"({FAKE_PUSH_MANAGER})({json.dumps(push_as.subscription)})")
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def _page(context: BrowserContext, label: str) -> WebUser:
    """A tab; a notification the app fails to show counts as one of its problems."""
    tab = WebUser(context.new_page(), label)

    def heard(message: ConsoleMessage) -> None:
        CONSOLE.append(f"{label}: {message.type}: {message.text}")
        if message.text.startswith("Notification failed"):
            tab.problems.append(message.text)

    tab.page.on("console", heard)
    return tab


def _worker_registration_id(cdp: CDPSession, page: Page) -> str:
    """The service worker's registration id, from the DevTools protocol (whose
    ServiceWorker domain this enables on `cdp`)."""
    found: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: found.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while not any(not r["isDeleted"] for r in found):
        assert time.monotonic() < deadline, "no service worker registration"
        page.wait_for_timeout(50)
    return next(r["registrationId"] for r in found if not r["isDeleted"])


def _notifications(
    page: Page, count: int, source: str = WORKER_NOTIFICATIONS
) -> list[dict[str, Any]]:
    """The worker registration's notifications (or those the page asked for),
    once there are `count`."""
    deadline = time.monotonic() + 20
    while len(shown := page.evaluate(source)) < count:
        assert time.monotonic() < deadline, f"notifications: {shown}; console: {CONSOLE}"
        page.wait_for_timeout(50)
    return shown


def _show_tab_look(tab: WebUser, path: Path) -> None:
    """A screenshot of what a browser tab strip would show: the page's title and
    favicon (headless screenshots have no tab strip), drawn large on a page of
    their own."""
    title = tab.page.title()
    icon = tab.page.locator("link[rel=icon]").get_attribute("href")
    sample = tab.page.context.new_page()
    sample.set_content(
        "<body style='font: 32px sans-serif; display: flex; gap: 16px; align-items: center'>"
        f"<img src='{icon}' width='128' height='128'><span id='title'></span></body>"
    )
    sample.locator("#title").evaluate("(el, text) => { el.textContent = text; }", title)
    sample.screenshot(path=path)
    sample.close()


def _send(site: Site, sender: Account, room_id: int, body: str) -> dict[str, Any]:
    return site.call("POST", f"/rooms/{room_id}/messages", sender.access_token, {"body": body})


async def _until_offline(
    url: str, watcher: Account, user_id: int, watching: threading.Event
) -> None:
    """Waits, on a socket of `watcher` (who shares a room with the user), for the
    user's `presence` to turn offline: from then on the server pushes to them."""
    async with aiohttp.ClientSession(base_url=url) as http:
        ws = await connect(http, watcher)
        watching.set()
        offline = {"type": "presence", "user_id": user_id, "status": "offline"}
        while await next_of(ws, "presence", timeout=15) != offline:
            pass
        await ws.close()


def test_prompt_after_sign_in_subscribes_and_the_worker_shows_the_push(
    site: Site, contexts: Callable[..., BrowserContext]
) -> None:
    ann = site.account("Ann Prompt")
    bob = site.account("Bob Sender")
    dm = site.call("POST", "/dm", bob.access_token, {"user_id": ann.id})
    subscriber = site.receiver.subscriber(_unique("ann"))
    context = contexts(push_as=subscriber)
    tab = _page(context, "ann")
    page = tab.page
    enable = page.get_by_role("button", name="Enable notifications")

    # Never on the sign-in screen: only once signed in.
    page.goto("/")
    expect(page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    expect(enable).to_have_count(0)
    page.get_by_role("textbox", name="Username").fill(ann.user["username"])
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    tab.expect_signed_in()
    expect(enable).to_be_visible()
    tab.shot(SHOTS / "notify-prompt.png")

    # The user says yes in the browser's own question.
    context.grant_permissions(["notifications"], origin=site.url)
    enable.click()
    expect(enable).to_have_count(0)
    subscriptions = site.call("GET", "/push/subscriptions", ann.access_token)["items"]
    assert [s["endpoint_origin"] for s in subscriptions] == [site.receiver.receiver.origin]
    assert page.evaluate("window.pushOptions") == {"userVisibleOnly": True, "key": site.vapid_key}
    scope = page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
    assert scope == f"{site.url}/"

    # Ann closes the app (no socket left): Bob's DM is pushed to her subscription.
    watching = threading.Event()
    offline = asyncio.run_coroutine_threadsafe(
        _until_offline(site.url, bob, ann.id, watching), site.receiver.loop
    )
    assert watching.wait(10)
    page.goto("/healthz")
    offline.result(20)
    sent = _send(site, bob, dm["id"], "Lunch at noon?")
    payload = site.receiver.next_push()
    assert payload == {
        "type": "message",
        "room_id": dm["id"],
        "seq": sent["seq"],
        "room_name": "",
        "sender": {"id": bob.id, "display_name": "Bob Sender"},
        "body": "Lunch at noon?",
    }
    # The payload as the browser would decrypt it, handed to the real worker.
    cdp = context.new_cdp_session(page)
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": f"{site.url}/",
            "registrationId": _worker_registration_id(cdp, page),
            "data": json.dumps(payload),
        },
    )
    [shown] = _notifications(page, 1)
    assert shown == {
        "title": "Bob Sender",
        "body": "Lunch at noon?",
        "tag": f"room-{dm['id']}",
        "data": {"room_id": dm["id"], "seq": sent["seq"]},
    }

    # A click on it, with the app open again: the worker tells the tab to open the DM.
    page.goto("/")
    tab.expect_signed_in()
    expect(page.get_by_role("heading", name="Bob Sender", exact=True)).to_have_count(0)
    [worker] = context.service_workers
    worker.evaluate(
        """async () => {
          const [notification] = await self.registration.getNotifications();
          self.dispatchEvent(new NotificationEvent('notificationclick', { notification }));
        }"""
    )
    expect(page.get_by_role("heading", name="Bob Sender", exact=True)).to_be_visible()

    # Signing out ends the subscription, here and on the server.
    page.get_by_role("button", name="Log out").click()
    tab.expect_signed_out()
    assert page.evaluate("window.pushUnsubscribed") is True
    token = site.token(ann.user["username"])
    assert site.call("GET", "/push/subscriptions", token)["items"] == []
    tab.assert_no_problems()


def test_dismissed_prompt_stays_away(site: Site, contexts: Callable[..., BrowserContext]) -> None:
    ann = _page(contexts(), "ann")
    ann.log_in(site.account("Ann Dismiss").user["username"])
    ann.page.get_by_role("button", name="Not now").click()
    expect(ann.page.get_by_role("button", name="Enable notifications")).to_have_count(0)
    ann.page.reload()
    ann.expect_signed_in()
    expect(ann.page.get_by_role("button", name="Enable notifications")).to_have_count(0)
    ann.assert_no_problems()


def test_notifications_control_sets_the_level_and_follows_other_tabs(
    site: Site, contexts: Callable[..., BrowserContext]
) -> None:
    ann = site.account("Ann Levels")
    ann_token = ann.access_token
    room_name = _unique("levels")
    room = site.call("POST", "/rooms", ann_token, {"name": room_name, "kind": "public"})
    context = contexts()
    first, second = _page(context, "first"), _page(context, "second")
    first.log_in(ann.user["username"])
    first.page.get_by_role("button", name="Not now").click()
    second.page.goto("/")  # the same browser: already signed in
    second.expect_signed_in()
    for tab in (first, second):
        tab.open_room(room_name)
    button = first.page.get_by_role("button", name=re.compile(r"^Notifications"))
    other = second.page.get_by_role("button", name=re.compile(r"^Notifications"))
    expect(button).to_have_text("Notifications: Mentions")  # a public room's default

    def notify() -> dict[str, Any]:
        return site.call("GET", f"/rooms/{room['id']}", ann_token)["notify"]

    button.click()
    dialog = first.dialog("Notifications")
    expect(dialog.get_by_role("radio", name="Mentions", exact=True)).to_be_checked()
    dialog.get_by_role("radio", name="All", exact=True).check()
    expect(button).to_have_text("Notifications: All")
    expect(other).to_have_text("Notifications: All")
    assert notify() == {"level": "all", "muted_until": None}

    dialog.get_by_role("radio", name="Nothing", exact=True).check()
    expect(button).to_have_text("Notifications: Nothing")
    expect(other).to_have_text("Notifications: Nothing")
    assert notify() == {"level": "none", "muted_until": None}

    # Mute for 8 hours: the level stays, muted_until is set.
    before = datetime.now(UTC)
    dialog.get_by_role("combobox", name="Mute for").select_option(label="8 hours")
    expect(dialog.get_by_role("radio", name="Mute", exact=True)).to_be_checked()
    expect(button).to_have_text("Notifications: Muted")
    expect(other).to_have_text("Notifications: Muted")
    expect(dialog.get_by_text(re.compile(r"^Muted until "))).to_be_visible()
    settings = notify()
    assert settings["level"] == "none"
    until = datetime.fromisoformat(settings["muted_until"])
    assert before + timedelta(hours=8) - timedelta(minutes=1) <= until
    assert until <= datetime.now(UTC) + timedelta(hours=8)
    first.shot(SHOTS / "notify-control-muted.png")

    dialog.get_by_role("combobox", name="Mute for").select_option(label="Until I unmute")
    expect(dialog.get_by_text("Muted until you unmute.")).to_be_visible()
    assert notify()["muted_until"].startswith("9999-01-01")

    dialog.get_by_role("radio", name="Mentions", exact=True).check()
    expect(other).to_have_text("Notifications: Mentions")
    assert notify() == {"level": "mentions", "muted_until": None}
    dialog.get_by_role("button", name="Close").click()

    # A change from anywhere else (another client, over REST) shows live too,
    # in the open dialog as well.
    second.page.get_by_role("button", name=re.compile(r"^Notifications")).click()
    site.call("PUT", f"/rooms/{room['id']}/notify", ann_token, {"level": "all"})
    expect(button).to_have_text("Notifications: All")
    expect(
        second.dialog("Notifications").get_by_role("radio", name="All", exact=True)
    ).to_be_checked()
    second.shot(SHOTS / "notify-control-dialog.png")
    first.assert_no_problems()
    second.assert_no_problems()


def test_title_and_favicon_count_what_notifies(
    site: Site, contexts: Callable[..., BrowserContext]
) -> None:
    ann, bob = site.account("Ann Count"), site.account("Bob Count")
    room = site.call(
        "POST", "/rooms", bob.access_token, {"name": _unique("count"), "kind": "public"}
    )
    site.call("POST", f"/rooms/{room['id']}/join", ann.access_token)
    dm = site.call("POST", "/dm", bob.access_token, {"user_id": ann.id})
    tab = _page(contexts(), "ann")
    page = tab.page
    tab.log_in(ann.user["username"])
    expect(page).to_have_title("Chat")

    for n in range(3):
        _send(site, bob, dm["id"], f"dm {n}")  # in a DM every message notifies
    _send(site, bob, room["id"], "chatter")  # in a room only mentions
    _send(site, bob, room["id"], f"@{ann.user['username']} look")
    expect(page).to_have_title("(4) Chat")
    icon = page.locator("link[rel=icon]")
    expect(icon).to_have_attribute("href", re.compile(r"%3E4%3C%2Ftext%3E"))
    tab.shot(SHOTS / "notify-unread-count.png")
    _show_tab_look(tab, SHOTS / "notify-favicon.png")

    tab.open_room("Bob Count")  # read: only the mention is left
    expect(page).to_have_title("(1) Chat")
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"level": "mentions", "muted_until": until}
    site.call("PUT", f"/rooms/{room['id']}/notify", ann.access_token, body)
    expect(page).to_have_title("Chat")  # muted rooms do not count
    expect(icon).not_to_have_attribute("href", re.compile("circle"))
    tab.assert_no_problems()


def test_hidden_tab_shows_its_own_notification_for_a_mention(
    site: Site, contexts: Callable[..., BrowserContext]
) -> None:
    ann, bob = site.account("Ann Hidden"), site.account("Bob Mentions")
    room_name = _unique("hidden")
    room = site.call("POST", "/rooms", bob.access_token, {"name": room_name, "kind": "public"})
    site.call("POST", f"/rooms/{room['id']}/join", ann.access_token)
    dm = site.call("POST", "/dm", bob.access_token, {"user_id": ann.id})
    # Allowed before: sign-in registers the worker and tries to subscribe (no push
    # service in headless Chromium: that part fails, quietly).
    tab = _page(contexts(granted=True, record=True), "ann")
    page = tab.page
    tab.log_in(ann.user["username"])
    expect(page.get_by_role("button", name="Enable notifications")).to_have_count(0)
    tab.open_room(room_name)
    assert page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)") == f"{site.url}/"
    page.evaluate(HIDE_TAB)

    username = ann.user["username"]
    _send(site, bob, room["id"], "no mention, no notification")
    sent = _send(site, bob, room["id"], f"@{username} can you review?")
    [shown] = _notifications(page, 1, "window.pageNotifications")
    assert shown == {
        "title": room_name,
        "body": f"Bob Mentions: @{username} can you review?",
        "tag": f"room-{room['id']}",
        "data": {"room_id": room["id"], "seq": sent["seq"]},
    }
    tab.shot(SHOTS / "notify-hidden-tab.png")

    # Muted: no notification, mention or not. The DM after it (which does
    # notify) shows that the muted message has been dealt with.
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"level": "all", "muted_until": until}
    site.call("PUT", f"/rooms/{room['id']}/notify", ann.access_token, body)
    expect(page.get_by_role("button", name=re.compile(r"^Notifications"))).to_have_text(
        "Notifications: Muted"
    )
    _send(site, bob, room["id"], f"@{username} muted now")
    _send(site, bob, dm["id"], "psst")
    assert _notifications(page, 2, "window.pageNotifications")[1:] == [
        {
            "title": "Bob Mentions",
            "body": "psst",
            "tag": f"room-{dm['id']}",
            "data": {"room_id": dm["id"], "seq": 1},
        }
    ]
    tab.assert_no_problems()
