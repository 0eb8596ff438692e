"""Browser tests of the web client's conversation features (issue 15):
reactions, threads, pins and mentions, live between two users.

One `python run.py` per module; Debian's chromium under Playwright plays the
users, one browser context each. Controls are found by role and accessible
name (API.md "Built-in web client"). Screenshots go to tests/helpers/browser.SHOTS
($WEB_SHOTS_DIR, or chat-web-shots in the temporary folder).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from ..helpers import PASSWORD
from ..helpers.browser import FOCUSED_NAME_JS, WebUser, close_all, shots_dir
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

RECONNECT_TIMEOUT_MS = 30_000


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


class User(WebUser):
    """One browser page as one signed-up user."""

    def __init__(self, page: Page, label: str, shots: Path) -> None:
        super().__init__(page, label)
        self.shots = shots

    def shot(self, name: str) -> None:  # type: ignore[override]  # named, in `shots`
        self.page.screenshot(path=self.shots / f"conversation-{self.label}-{name}.png")

    def sign_up(self, username: str, display_name: str) -> None:
        self.username = username
        page = self.page
        page.goto("/")
        page.get_by_role("textbox", name="Username").fill(username)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("textbox", name="Display name").fill(display_name)
        page.get_by_role("button", name="Sign up").click()
        expect(page.get_by_role("button", name="Log out")).to_be_visible()
        expect(self.status).to_have_text("Connected")

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status")

    def room_button(self, name: str) -> Locator:
        return self.page.get_by_role("navigation", name="Rooms").get_by_role("button", name=name)

    def create_room(self, name: str) -> None:
        self.page.get_by_role("button", name="New room").click()
        self.page.get_by_role("textbox", name="Room name").fill(name)
        self.page.get_by_role("button", name="Create").click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def join(self, name: str) -> None:
        self.page.get_by_role("button", name="Browse rooms").click()
        entry = self.page.get_by_role("listitem").filter(has_text=name)
        entry.get_by_role("button", name="Join").click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def open_room(self, name: str) -> None:
        self.room_button(name).click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def send(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message", exact=True)
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def article(self, text: str) -> Locator:
        log = self.page.get_by_role("log", name="Messages")
        return log.get_by_role("article").filter(has_text=text)

    @property
    def thread(self) -> Locator:
        return self.page.get_by_role("region", name="Thread")

    def thread_article(self, text: str) -> Locator:
        return self.thread.get_by_role("article").filter(has_text=text)

    def chip(self, message: Locator, name: str) -> Locator:
        return message.get_by_role("button", name=name, exact=True)

    @property
    def picker(self) -> Locator:
        return self.page.get_by_role("dialog", name="Pick a reaction")

    def react(self, message: Locator, emoji: str) -> None:
        """Reacts with the mouse: React, then the emoji in the picker."""
        message.get_by_role("button", name="React").click()
        self.picker.get_by_role("button", name=emoji).click()
        expect(self.picker).to_be_hidden()

    def focused_name(self) -> str:
        return str(self.page.evaluate(FOCUSED_NAME_JS)).strip()


@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_dir("conversation")


@pytest.fixture
def new_user(browser: Browser, server: ServerProcess, shots: Path) -> Iterator[Callable[..., User]]:
    """Signs up users, each in a browser context of its own."""
    users: list[User] = []

    def make(label: str, display_name: str, width: int = 1200, height: int = 800) -> User:
        context = browser.new_context(
            base_url=server.url, viewport={"width": width, "height": height}
        )
        user = User(context.new_page(), label, shots)
        user.sign_up(_unique(label), display_name)
        users.append(user)
        return user

    yield make
    close_all(users)


@pytest.fixture
def pair(new_user: Callable[..., User]) -> tuple[User, User, str]:
    """Alice (the owner) and Bob (a member) in a new public room, both in it."""
    alice = new_user("alice", "Alice Able")
    bob = new_user("bob", "Bob Baker")
    room = _unique("talk")
    alice.create_room(room)
    bob.join(room)
    return alice, bob, room


def test_reactions_by_keyboard_live(pair: tuple[User, User, str]) -> None:
    alice, bob, _ = pair
    alice.send("react to me")
    message = bob.article("react to me")
    expect(message).to_have_count(1)

    # The picker opens from the React button on its first emoji; arrows move.
    react = message.get_by_role("button", name="React")
    react.focus()
    bob.page.keyboard.press("Enter")
    picker = bob.picker
    expect(picker).to_be_visible()
    expect(react).to_have_attribute("aria-expanded", "true")
    expect(picker.get_by_role("button", name="👍")).to_be_focused()
    bob.page.keyboard.press("ArrowRight")
    expect(picker.get_by_role("button", name="👎")).to_be_focused()
    bob.page.keyboard.press("ArrowDown")
    expect(picker.get_by_role("button", name="😂")).to_be_focused()
    bob.page.keyboard.press("ArrowUp")
    bob.page.keyboard.press("ArrowLeft")
    expect(picker.get_by_role("button", name="👍")).to_be_focused()
    bob.shot("picker-open")
    # Escape closes it and gives focus back to React.
    bob.page.keyboard.press("Escape")
    expect(picker).to_be_hidden()
    expect(react).to_be_focused()
    expect(react).to_have_attribute("aria-expanded", "false")

    # Enter picks.
    bob.page.keyboard.press("Enter")
    expect(picker.get_by_role("button", name="👍")).to_be_focused()
    bob.page.keyboard.press("Enter")
    expect(picker).to_be_hidden()
    expect(react).to_be_focused()
    mine = bob.chip(message, "👍 1")
    expect(mine).to_have_attribute("aria-pressed", "true")

    # Alice sees it live, not as hers; her click makes it two.
    seen = alice.article("react to me")
    expect(alice.chip(seen, "👍 1")).to_have_attribute("aria-pressed", "false")
    alice.chip(seen, "👍 1").click()
    expect(alice.chip(seen, "👍 2")).to_have_attribute("aria-pressed", "true")
    expect(bob.chip(message, "👍 2")).to_have_attribute("aria-pressed", "true")
    # A second emoji from the picker by mouse.
    alice.react(seen, "🎉")
    expect(bob.chip(message, "🎉 1")).to_have_attribute("aria-pressed", "false")
    bob.shot("message-with-chips")

    # Toggling off: Bob's chip drops to 1 for both, then Alice's empties it.
    bob.chip(message, "👍 2").click()
    expect(alice.chip(seen, "👍 1")).to_have_attribute("aria-pressed", "true")
    expect(bob.chip(message, "👍 1")).to_have_attribute("aria-pressed", "false")
    alice.chip(seen, "👍 1").click()
    expect(message.get_by_role("button", name=re.compile("^👍"))).to_have_count(0)
    expect(bob.chip(message, "🎉 1")).to_be_visible()


def test_thread_replies_live(pair: tuple[User, User, str]) -> None:
    alice, bob, _ = pair
    alice.send("thread root")
    alice.send("after the root")
    bob.article("thread root").get_by_role("button", name="Reply").click()
    expect(bob.thread).to_be_visible()
    reply_box = bob.thread.get_by_role("textbox", name="Reply")
    expect(reply_box).to_be_focused()
    expect(bob.thread_article("thread root")).to_have_count(1)
    reply_box.fill("first reply")
    reply_box.press("Enter")
    expect(bob.thread_article("first reply")).to_have_count(1)
    # Replies live in the thread: the log shows the count on the root only.
    expect(bob.article("first reply")).to_have_count(0)
    expect(bob.article("thread root").get_by_role("button", name="1 reply")).to_be_visible()

    root = alice.article("thread root")
    expect(root.get_by_role("button", name="1 reply")).to_be_visible()
    expect(alice.article("first reply")).to_have_count(0)
    root.get_by_role("button", name="1 reply").click()
    expect(alice.thread_article("first reply")).to_have_count(1)

    reply_box.fill("second reply")
    reply_box.press("Enter")
    expect(alice.thread_article("second reply")).to_have_count(1)
    expect(root.get_by_role("button", name="2 replies")).to_be_visible()
    expect(alice.thread).to_contain_text("2 replies")
    alice.shot("thread-panel")

    # A reply is edited where it shows, in the thread.
    bob.thread_article("first reply").get_by_role("button", name="Edit").click()
    editor = bob.thread.get_by_role("textbox", name="Edit message")
    editor.fill("first reply, edited")
    editor.press("Enter")
    expect(alice.thread_article("first reply, edited")).to_have_count(1)
    expect(bob.thread).to_be_visible()

    # Escape (or Close thread) closes it and focus returns to the opener.
    alice.thread.get_by_role("textbox", name="Reply").press("Escape")
    expect(alice.thread).to_be_hidden()
    expect(root.get_by_role("button", name="2 replies")).to_be_focused()
    bob.thread.get_by_role("button", name="Close thread").click()
    expect(bob.thread).to_be_hidden()


def test_pins_and_pinned_list(pair: tuple[User, User, str]) -> None:
    alice, bob, _ = pair
    alice.send("remember this")
    alice.send("and this too")
    bob.send("chatter")
    # Members of a public room may not pin; its owner may.
    expect(bob.article("remember this").get_by_role("button", name="Pin")).to_have_count(0)
    alice.article("remember this").get_by_role("button", name="Pin", exact=True).click()
    expect(alice.article("remember this").get_by_role("button", name="Unpin")).to_be_visible()
    expect(bob.article("remember this").locator(".pin-mark")).to_be_visible()

    pinned = bob.page.get_by_role("button", name="Pinned", exact=True)
    pinned.click()
    panel = bob.page.get_by_role("dialog", name="Pinned messages")
    expect(panel.get_by_role("button")).to_have_count(1)
    expect(panel.get_by_role("button").first).to_contain_text("remember this")
    expect(panel.get_by_role("button").first).to_be_focused()
    # Live while open.
    alice.article("and this too").get_by_role("button", name="Pin", exact=True).click()
    expect(panel.get_by_role("button")).to_have_count(2)
    expect(panel.get_by_role("button").first).to_contain_text("and this too")
    bob.shot("pinned-list")
    panel.get_by_role("button").filter(has_text="remember this").click()
    expect(panel).to_be_hidden()
    expect(bob.article("remember this")).to_be_focused()

    # Unpinning takes it off the list.
    alice.article("remember this").get_by_role("button", name="Unpin").click()
    expect(bob.article("remember this").locator(".pin-mark")).to_be_hidden()
    pinned.click()
    expect(panel.get_by_role("button")).to_have_count(1)
    bob.page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(pinned).to_be_focused()


def test_mention_autocomplete_badge_and_highlight(pair: tuple[User, User, str]) -> None:
    alice, bob, room = pair
    bob.create_room(_unique("elsewhere"))  # Bob looks at another room

    box = alice.page.get_by_role("textbox", name="Message", exact=True)
    box.fill("hello ")
    box.press_sequentially("@b")
    options = alice.page.get_by_role("listbox", name="People to mention")
    expect(options).to_be_visible()
    bob_option = options.get_by_role("option").filter(has_text="Bob Baker")
    expect(bob_option).to_have_attribute("aria-selected", "true")
    alice.shot("mention-autocomplete")
    box.press("Enter")  # picks, does not send
    expect(options).to_be_hidden()
    expect(box).to_have_value(f"hello @{bob.username} ")
    box.press_sequentially("look")
    box.press("Enter")
    expect(box).to_have_value("")

    # Bob's entry for the room: an unread badge and, apart from it, a mention badge.
    entry = bob.room_button(room)
    expect(entry).to_have_accessible_name(re.compile(r"\b1 unread\b.*\b1 mention\b"))
    expect(entry.locator(".mention-badge")).to_be_visible()
    alice.send("no mention here")
    expect(entry).to_have_accessible_name(re.compile(r"\b2 unread\b.*\b1 mention\b"))
    bob.shot("mention-badge")

    bob.open_room(room)
    mention = bob.article("look")
    expect(mention).to_have_class(re.compile(r"\bmentioned\b"))
    expect(mention.locator(".mention.me")).to_have_text(f"@{bob.username}")
    expect(bob.article("no mention here")).not_to_have_class(re.compile(r"\bmentioned\b"))
    expect(entry).to_have_accessible_name(room)  # read: both badges gone
    bob.shot("mention-highlight")

    # Escape closes the list and keeps the text.
    bob_box = bob.page.get_by_role("textbox", name="Message", exact=True)
    bob_box.press_sequentially("@al")
    expect(bob.page.get_by_role("listbox", name="People to mention")).to_be_visible()
    bob_box.press("Escape")
    expect(bob.page.get_by_role("listbox", name="People to mention")).to_be_hidden()
    expect(bob_box).to_have_value("@al")


def test_changes_while_offline_arrive_after_reconnect(
    new_user: Callable[..., User], server: ServerProcess
) -> None:
    alice = new_user("alice", "Alice Able")
    bob = new_user("bob", "Bob Baker")
    cut: dict[str, Any] = {"active": False, "routes": []}

    def route(ws: Any) -> None:
        if cut["active"]:
            ws.close()
        else:
            ws.connect_to_server()
            cut["routes"].append(ws)

    bob.page.route_web_socket(re.compile(r"/api/v1/ws$"), route)
    bob.page.reload()
    expect(bob.status).to_have_text("Connected")
    room = _unique("offline")
    alice.create_room(room)
    bob.join(room)
    alice.send("while you were away")
    expect(bob.article("while you were away")).to_have_count(1)

    cut["active"] = True
    for ws in cut["routes"]:
        ws.close()
    expect(bob.status).to_have_text("Reconnecting…")
    message = alice.article("while you were away")
    alice.react(message, "🚀")
    message.get_by_role("button", name="Pin", exact=True).click()
    message.get_by_role("button", name="Reply").click()
    reply_box = alice.thread.get_by_role("textbox", name="Reply")
    reply_box.fill("a reply you missed")
    reply_box.press("Enter")
    expect(alice.thread_article("a reply you missed")).to_have_count(1)
    expect(message.get_by_role("button", name="1 reply")).to_be_visible()
    cut["active"] = False

    expect(bob.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    missed = bob.article("while you were away")
    expect(bob.chip(missed, "🚀 1")).to_have_attribute("aria-pressed", "false")
    expect(missed.locator(".pin-mark")).to_be_visible()
    expect(missed.get_by_role("button", name="1 reply")).to_be_visible()
    expect(bob.article("a reply you missed")).to_have_count(0)


def test_phone_width_thread_is_full_screen(new_user: Callable[..., User]) -> None:
    width, height = 375, 740
    hana = new_user("hana", "Hana Hill", width=width, height=height)
    hana.create_room(_unique("pocket"))
    hana.send("on the go")
    hana.article("on the go").get_by_role("button", name="Reply").click()
    expect(hana.thread).to_be_visible()
    reply_box = hana.thread.get_by_role("textbox", name="Reply")
    reply_box.fill("from my phone")
    reply_box.press("Enter")
    expect(hana.thread_article("from my phone")).to_have_count(1)
    box = hana.thread.bounding_box()
    assert box is not None
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, width, height)
    assert hana.page.evaluate("document.documentElement.scrollWidth") <= width
    hana.shot("phone-thread")
    # What it covers is inert (out of the tab order) until it closes.
    covered = "[...document.querySelectorAll('#message-input, #logout-button')]"
    assert hana.page.evaluate(f"{covered}.every((el) => el.closest('[inert]'))")
    hana.thread.get_by_role("button", name="Close thread").click()
    expect(hana.thread).to_be_hidden()
    assert hana.page.evaluate(f"{covered}.every((el) => !el.closest('[inert]'))")
    expect(hana.article("on the go").get_by_role("button", name="1 reply")).to_be_visible()
    assert hana.focused_name() == "Reply"
