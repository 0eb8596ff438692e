"""Browser tests of the web client's message log and search: the unread line
and the read marker, Jump to latest, and search results that open a room at
an old message.

One `python run.py` per module; Debian's chromium under Playwright plays the
reader; the other users post over REST. Controls are found by role and
accessible name (API.md "Built-in web client"). Screenshots go to
tests/helpers/browser.SHOTS
($WEB_SHOTS_DIR, or chat-web-shots in the temporary folder).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, assert_accessible, close_all, new_user, rest, shots_dir
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

MARKER_TIMEOUT_S = 10


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


@dataclass
class Account:
    username: str
    token: str


@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_dir("log")


@pytest.fixture
def api(server: ServerProcess) -> Callable[..., Any]:
    def call(method: str, path: str, account: Account | None = None, body: Any = None) -> Any:
        return rest(server.url, method, path, account.token if account else None, body)

    return call


@pytest.fixture
def signup(api: Callable[..., Any]) -> Callable[[str], Account]:
    def make(prefix: str) -> Account:
        username = _unique(prefix)
        auth = api("POST", "/auth/signup", body={"username": username, "password": PASSWORD})
        return Account(username, auth["access_token"])

    return make


@pytest.fixture
def reader(browser: Browser, server: ServerProcess) -> Iterator[Callable[[Account], WebUser]]:
    """Logs an account in, in a browser context of its own."""
    users: list[WebUser] = []

    def make(account: Account) -> WebUser:
        user = new_user(browser, server.url, account.username)
        user.log_in(account.username)
        users.append(user)
        return user

    yield make
    close_all(users)


def _post_all(api: Callable[..., Any], author: Account, room_id: int, bodies: list[str]) -> None:
    for n, body in enumerate(bodies):
        payload = {"body": body, "client_id": f"{body}-{n}"[:64]}
        api("POST", f"/rooms/{room_id}/messages", author, payload)


def _read_marker(api: Callable[..., Any], account: Account, room_id: int) -> int:
    rooms = api("GET", "/rooms", account)["items"]
    return int(next(room["my_last_read_seq"] for room in rooms if room["id"] == room_id))


def _wait_marker(
    api: Callable[..., Any], account: Account, room_id: int, done: Callable[[int], bool]
) -> int:
    """Polls the read marker over REST (the server's state, not the page's)
    until done(marker)."""
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while True:
        marker = _read_marker(api, account, room_id)
        if done(marker):
            return marker
        assert time.monotonic() < deadline, f"read marker stuck at {marker}"
        time.sleep(0.1)


def _log(user: WebUser) -> Locator:
    return user.page.get_by_role("log", name="Messages")


def _article(user: WebUser, text: str) -> Locator:
    return _log(user).get_by_role("article").filter(has_text=text)


def _scroll(user: WebUser, script: str) -> None:
    _log(user).evaluate(script)


def test_unread_line_read_marker_and_jump_to_latest(
    api: Callable[..., Any],
    signup: Callable[[str], Account],
    reader: Callable[[Account], WebUser],
    shots: Path,
) -> None:
    alice, bob = signup("alice"), signup("bob")
    room_name = _unique("busy")
    room = api("POST", "/rooms", alice, {"name": room_name, "kind": "public"})
    room_id = room["id"]
    api("POST", f"/rooms/{room_id}/join", bob)
    _post_all(api, alice, room_id, [f"early {n:03d}" for n in range(1, 31)])
    api("POST", f"/rooms/{room_id}/read", bob, {"seq": 30})
    _post_all(api, alice, room_id, [f"unread {n:03d}" for n in range(1, 201)])
    assert _read_marker(api, bob, room_id) == 30

    user = reader(bob)
    user.open_room(room_name)
    page = user.page
    line = _log(user).get_by_role("separator", name="New messages")
    expect(line).to_be_in_viewport()
    # Right above the first unread message, below the last read one.
    assert "unread 001" in line.evaluate("el => el.nextElementSibling.textContent")
    assert "early 030" in line.evaluate("el => el.previousElementSibling.textContent")
    expect(_article(user, "unread 001")).to_be_in_viewport()
    expect(_article(user, "unread 200")).to_have_count(0)
    # The window does not reach the newest message.
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    user.shot(shots / "log-unread-line.png")
    assert_accessible(user.page, "unread line")

    # What is on screen is read, not the 200.
    first = _wait_marker(api, bob, room_id, lambda marker: marker > 30)
    assert first < 230, "opening the room must not mark everything read"

    # Scrolling down loads newer pages and moves the marker forward.
    markers = [first]
    for _ in range(40):
        if _article(user, "unread 200").count():
            break
        shown = _log(user).get_by_role("article").count()
        _scroll(user, "log => { log.scrollTop = log.scrollHeight; }")
        expect(_log(user).get_by_role("article")).not_to_have_count(shown)
        # What the scroll brought on screen is read (the marker moves, debounced).
        markers.append(_wait_marker(api, bob, room_id, lambda marker: marker > markers[-1]))
    _scroll(user, "log => { log.scrollTop = log.scrollHeight; }")
    expect(_article(user, "unread 200")).to_be_in_viewport()
    assert _wait_marker(api, bob, room_id, lambda marker: marker == 230) == 230
    assert any(first < marker < 230 for marker in markers), markers
    expect(jump).to_be_hidden()
    # Still one unread line, and the older history above it stayed.
    expect(_log(user).get_by_role("separator")).to_have_count(1)
    expect(_article(user, "early 001")).to_have_count(1)

    # Scrolled up, a new message does not move the log; the jump button
    # appears, and brings it into view.
    _scroll(user, "log => { log.scrollTop = 0; }")
    expect(_article(user, "early 001")).to_be_in_viewport()
    api("POST", f"/rooms/{room_id}/messages", alice, {"body": "live while scrolled up"})
    expect(jump).to_be_visible()
    expect(_article(user, "live while scrolled up")).to_have_count(1)
    expect(_article(user, "live while scrolled up")).not_to_be_in_viewport()
    expect(_article(user, "early 001")).to_be_in_viewport()
    user.shot(shots / "log-jump-to-latest.png")
    assert_accessible(user.page, "jump to latest")
    jump.click()
    expect(_article(user, "live while scrolled up")).to_be_in_viewport()
    expect(jump).to_be_hidden()
    assert _wait_marker(api, bob, room_id, lambda marker: marker == 231) == 231

    # At the bottom, new messages keep the log pinned there.
    api("POST", f"/rooms/{room_id}/messages", alice, {"body": "pinned to the bottom"})
    expect(_article(user, "pinned to the bottom")).to_be_in_viewport()
    expect(jump).to_be_hidden()


def test_search_opens_the_room_at_an_old_message(
    api: Callable[..., Any],
    signup: Callable[[str], Account],
    reader: Callable[[Account], WebUser],
    shots: Path,
) -> None:
    alice, bob = signup("alice"), signup("bob")
    word = f"zebra{secrets.token_hex(2)}"
    big_name, small_name = _unique("archive"), _unique("chatter")
    big = api("POST", "/rooms", alice, {"name": big_name, "kind": "public"})
    small = api("POST", "/rooms", alice, {"name": small_name, "kind": "public"})
    for room in (big, small):
        api("POST", f"/rooms/{room['id']}/join", bob)
    bodies = [f"note {n:03d}" for n in range(1, 201)]
    bodies[99] = f"note 100 mentions the {word} once"
    bodies[189] = f"note 190 and the {word.upper()} again"
    _post_all(api, alice, big["id"], bodies)
    _post_all(api, alice, small["id"], [f"small talk about a {word}"])

    user = reader(bob)
    page = user.page
    user.open_room(small_name)
    search = page.get_by_role("searchbox", name="Search")
    results = page.get_by_role("dialog", name="Search results")

    # Nothing found.
    search.fill("nothingmatchesthis")
    search.press("Enter")
    expect(results.get_by_text("No messages found")).to_be_visible()

    # The server's refusal, in words.
    search.fill("x" * 201)
    search.press("Enter")
    expect(results.get_by_text(re.compile(r"^Could not search: .*200 characters"))).to_be_visible()

    # Typing searches after a pause; results are grouped by room, newest first.
    search.fill(word)
    expect(results.get_by_role("link")).to_have_count(3)
    headings = results.get_by_role("heading", level=3)
    expect(headings).to_have_text([small_name, big_name])
    big_group = results.get_by_role("region", name=big_name)
    expect(big_group.get_by_role("link")).to_have_count(2)
    hit = big_group.get_by_role("link").filter(has_text="note 100")
    expect(hit.locator("mark")).to_have_text(word)
    expect(big_group.get_by_role("link").first.locator("mark")).to_have_text(word.upper())
    user.shot(shots / "log-search-results.png")
    assert_accessible(user.page, "search results")
    page.emulate_media(color_scheme="dark")
    user.shot(shots / "log-search-results-dark.png")
    assert_accessible(user.page, "search results (dark)")
    page.emulate_media(color_scheme="light")

    # Escape closes the results and keeps the query; Enter searches again.
    search.press("Escape")
    expect(results).to_be_hidden()
    expect(search).to_have_value(word)
    search.press("Enter")
    expect(hit).to_be_visible()
    # By keyboard: ArrowDown into the results, Escape back to the box.
    search.press("ArrowDown")
    expect(results.get_by_role("link").first).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(results.get_by_role("link").nth(1)).to_be_focused()
    page.keyboard.press("Escape")
    expect(results).to_be_hidden()
    expect(search).to_be_focused()
    search.press("Enter")
    expect(hit).to_be_visible()

    # Choosing a result opens its room at that message, highlighted.
    hit.click()
    expect(results).to_be_hidden()
    expect(page.get_by_role("heading", name=big_name, exact=True)).to_be_visible()
    message = _article(user, "note 100 mentions")
    expect(message).to_be_in_viewport()
    expect(message).to_have_class(re.compile(r"\bflash\b"))
    expect(message).to_be_focused()
    expect(_article(user, "note 200")).to_have_count(0)  # not the newest page
    user.shot(shots / "log-search-opened.png")

    # A reload comes back to the room near where the log was (its anchor, kept per room).
    page.reload()
    expect(page.get_by_role("heading", name=big_name, exact=True)).to_be_visible()
    expect(_article(user, "note 100 mentions")).to_be_in_viewport()
    expect(_article(user, "note 200")).to_have_count(0)

    # Scroll-back still loads older messages, down to the first.
    for _ in range(10):
        if _article(user, "note 001").count():
            break
        shown = _log(user).get_by_role("article").count()
        _scroll(user, "log => { log.scrollTop = 0; }")
        expect(_log(user).get_by_role("article")).not_to_have_count(shown)
    expect(_article(user, "note 001")).to_have_count(1)
    expect(page.get_by_text("This is the start of the room.")).to_be_visible()
    # And Jump to latest reaches the newest.
    page.get_by_role("button", name="Jump to latest").click()
    expect(_article(user, "note 200")).to_be_in_viewport()
    bodies_shown = _log(user).locator("article .body").all_inner_texts()
    assert bodies_shown == bodies[-len(bodies_shown) :]

    # A reply found opens its thread, its first message flashed in the log.
    root = api("GET", f"/rooms/{big['id']}/messages?after_seq=189&limit=1", bob)["items"][0]
    reply = {"body": f"a threaded {word} reply", "reply_to": root["id"]}
    api("POST", f"/rooms/{big['id']}/messages", alice, reply)
    search.fill(word)
    search.press("Enter")
    results.get_by_role("link").filter(has_text="threaded").click()
    thread = page.get_by_role("region", name="Thread")
    expect(thread.get_by_role("article").filter(has_text="threaded")).to_be_visible()
    expect(_article(user, "note 190 and")).to_have_class(re.compile(r"\bflash\b"))
    expect(_article(user, "threaded")).to_have_count(0)
    page.get_by_role("button", name="Close thread").click()

    # On a phone (search is on the room list's screen) the results fit the screen.
    page.set_viewport_size({"width": 375, "height": 812})
    page.get_by_role("button", name="Back to rooms").click()
    search.fill(word)
    search.press("Enter")
    expect(results.get_by_role("link")).to_have_count(4)
    box = results.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    user.shot(shots / "log-search-phone.png")
    assert_accessible(user.page, "search results on a phone")
