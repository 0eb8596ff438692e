"""Browser tests of how the web client renders messages: Markdown (sanitized,
no raw HTML), links, grouping of consecutive messages, day headings, times,
the "(edited)" marker, initials avatars and the image viewer.

Two users live: one writes through the page, the other sees it. One
`python run.py` per module; Debian's chromium under Playwright. Screenshots go
to tests/helpers/browser.SHOTS
($WEB_SHOTS_DIR, or chat-web-shots in the temporary folder).
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, assert_accessible, close_all, rest, shots_dir
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


class User(WebUser):
    """A page signed in as `username`."""

    def __init__(self, page: Page, label: str, username: str) -> None:
        super().__init__(page, label)
        self.username = username


class Pair(NamedTuple):
    alice: User  # writes
    bob: User  # reads
    room: str


@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_dir("render")


@pytest.fixture
def pair(browser: Browser, server: ServerProcess) -> Iterator[Pair]:
    """Alice and Bob (signed up over REST) in a new room, each on a page with it open."""
    room = _unique("render")
    accounts: dict[str, dict[str, Any]] = {}
    for label, display_name in (("alice", "Alice Able"), ("bob", "Bob Baker")):
        accounts[label] = rest(
            server.url,
            "POST",
            "/auth/signup",
            body={"username": _unique(label), "password": PASSWORD, "display_name": display_name},
        )
    created = rest(
        server.url,
        "POST",
        "/rooms",
        accounts["alice"]["access_token"],
        {"name": room, "kind": "public"},
    )
    rest(server.url, "POST", f"/rooms/{created['id']}/join", accounts["bob"]["access_token"])
    users = []
    for label, account in accounts.items():
        context = browser.new_context(base_url=server.url, viewport={"width": 1100, "height": 800})
        # Links in messages point at example.com: answered here, not on the network.
        context.route(
            re.compile(r"^https://example\.(com|org)/"), lambda route: route.fulfill(body="ok")
        )
        user = User(context.new_page(), label, account["user"]["username"])
        user.log_in(user.username)
        user.open_room(room)
        users.append(user)
    yield Pair(users[0], users[1], room)
    close_all(users)


def _send_lines(user: WebUser, text: str) -> None:
    """Sends a message that may span lines (filled in at once, sent with Enter)."""
    box = user.page.get_by_role("textbox", name="Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def _body(message: Locator) -> Locator:
    return message.locator(".body")


def test_markdown_renders_live(pair: Pair) -> None:
    alice, bob, _ = pair
    _send_lines(alice, "**bold words** and *slanted* and `inline code`")
    _send_lines(alice, "```\ndef hello():\n    return 1\n```")
    _send_lines(alice, "> quoted wisdom\n\nmy answer")
    _send_lines(alice, "shopping:\n- apples\n- pears\n\n1. first\n2. second")
    _send_lines(alice, "# A heading\nline one\nline two")
    _send_lines(alice, "agenda:\n\n3. third\n4. fourth")

    body = _body(bob.articles("bold words"))
    expect(body.locator("strong")).to_have_text("bold words")
    expect(body.locator("em")).to_have_text("slanted")
    expect(body.locator("code")).to_have_text("inline code")

    block = _body(bob.articles("def hello")).locator("pre > code")
    expect(block).to_have_text("def hello():\n    return 1\n")
    # Code keeps its spacing: the indented line is as wide as written.
    assert "    return 1" in block.inner_text()

    quote = _body(bob.articles("quoted wisdom"))
    expect(quote.locator("blockquote")).to_have_text("quoted wisdom")
    expect(quote.locator("p").last).to_have_text("my answer")

    lists = _body(bob.articles("shopping"))
    expect(lists.get_by_role("list")).to_have_count(2)
    expect(lists.locator("ul > li")).to_have_text(["apples", "pears"])
    expect(lists.locator("ol > li")).to_have_text(["first", "second"])
    # A list starting at 3 says 3 (its `start` survives sanitizing).
    expect(_body(bob.articles("agenda")).locator("ol")).to_have_attribute("start", "3")

    # A heading is bold text, not a document heading; single newlines break lines.
    heading = _body(bob.articles("A heading"))
    expect(heading.locator("strong")).to_have_text("A heading")
    expect(heading.get_by_role("heading")).to_have_count(0)
    expect(heading.locator("br")).to_have_count(1)


def test_links_open_in_a_new_tab_and_only_safe_ones(pair: Pair) -> None:
    alice, bob, _ = pair
    _send_lines(
        alice,
        "docs at https://example.com/docs and [the site](https://example.org/home) "
        "or [bad](javascript:window.__pwned=1) ![logo](https://example.com/logo.png)",
    )
    message = bob.articles("docs at")
    bare = message.get_by_role("link", name="https://example.com/docs")
    named = message.get_by_role("link", name="the site")
    for link in (bare, named):
        expect(link).to_have_attribute("target", "_blank")
        expect(link).to_have_attribute("rel", "noopener noreferrer")
    # javascript: is no link, only its text; an image is a link to it, not loaded.
    expect(message.get_by_role("link", name="bad")).to_have_count(0)
    expect(_body(message)).to_contain_text("bad")
    expect(message.get_by_role("link", name="logo")).to_have_attribute(
        "href", "https://example.com/logo.png"
    )
    expect(_body(message).locator("img")).to_have_count(0)

    with bob.page.expect_popup() as popup_info:
        named.click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.url == "https://example.org/home"
    assert popup.evaluate("window.opener") is None
    popup.close()


def test_html_in_a_body_is_text_and_inert(pair: Pair) -> None:
    alice, bob, _ = pair
    script = "<script>window.__pwned=1</script>"
    image = '<img src=x onerror="window.__pwned=1">'
    _send_lines(alice, script)
    _send_lines(alice, f"inline {image} here and <b>not bold</b>")
    for user in (alice, bob):
        expect(_body(user.articles("__pwned").first)).to_have_text(script)
        inline = _body(user.articles("inline"))
        expect(inline).to_have_text(f"inline {image} here and <b>not bold</b>")
        expect(inline.locator("img, b, script")).to_have_count(0)
        expect(user.page.locator("img[src='x']")).to_have_count(0)
        assert user.page.evaluate("window.__pwned") is None


def test_mentions_still_highlighted_in_markdown(pair: Pair) -> None:
    alice, bob, _ = pair
    name = bob.username
    _send_lines(alice, f"**hey** @{name}, see `@{name}` and *@{name}*")
    message = bob.articles("hey")
    expect(message).to_have_class(re.compile(r"\bmentioned\b"))
    # Highlighted in text and emphasis, never inside code.
    expect(message.locator(".mention.me")).to_have_count(2)
    expect(message.locator("em .mention.me")).to_have_text(f"@{name}")
    expect(message.locator("code .mention")).to_have_count(0)


def test_grouping_day_heading_time_and_initials(pair: Pair) -> None:
    alice, bob, _ = pair
    for text in ("group one", "group two", "group three"):
        alice.send(text)
    expect(bob.articles("group three")).to_have_count(1)
    bob.send("bob answers")
    expect(alice.articles("bob answers")).to_have_count(1)
    alice.send("alice again")

    log = bob.page.get_by_role("log", name="Messages")
    expect(log.get_by_role("article")).to_have_count(5)
    continued = re.compile(r"\bcontinued\b")
    expect(bob.articles("group one")).not_to_have_class(continued)
    expect(bob.articles("group two")).to_have_class(continued)
    expect(bob.articles("group three")).to_have_class(continued)
    expect(bob.articles("bob answers")).not_to_have_class(continued)
    expect(bob.articles("alice again")).not_to_have_class(continued)
    # A grouped message shows no name or avatar, but still holds the name.
    grouped = bob.articles("group two")
    expect(grouped.locator(".sender")).to_have_text("Alice Able")
    hidden_name = grouped.locator(".sender").bounding_box()
    assert hidden_name is not None and hidden_name["width"] <= 1, "visually hidden"
    expect(grouped.locator(".initials")).to_be_hidden()
    first = bob.articles("group one")
    expect(first.locator(".sender")).to_be_visible()

    # Initials in a circle: no avatar image.
    initials = first.locator(".initials")
    expect(initials).to_be_visible()
    expect(initials).to_have_text("AA")
    expect(first.locator("img.avatar")).to_be_hidden()
    expect(bob.articles("bob answers").locator(".initials")).to_have_text("BB")
    box = initials.bounding_box()
    assert box is not None and abs(box["width"] - box["height"]) < 1
    assert initials.evaluate("el => getComputedStyle(el).borderRadius") == "50%"

    # One day heading, "Today", above the first message.
    expect(log.get_by_role("heading", name="Today")).to_have_count(1)
    expect(log.locator(".day-separator + article")).to_contain_text("group one")

    # A relative time, the full date and time on hover.
    time = first.locator("time.message-time")
    expect(time).to_have_text(re.compile(r"^(just now|\d+ min ago)$"))
    expect(time).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    expect(time).to_have_attribute("title", re.compile(r"\d"))


DECORATE_JS = """async () => {
  const { decorateLog } = await import('/web/logdecor.js');
  const day = (offset, hours, minutes) => {
    const date = new Date();
    date.setDate(date.getDate() + offset);
    date.setHours(hours, minutes, 0, 0);
    return date;
  };
  const key = (date) => [date.getFullYear(), date.getMonth() + 1, date.getDate()]
    .map((n) => String(n).padStart(2, '0')).join('-');
  const article = (seq, sender, date) => {
    const element = document.createElement('article');
    Object.assign(element.dataset, { seq, sender, created: date.toISOString(), day: key(date) });
    return element;
  };
  const list = document.createElement('div');
  list.append(
    article(1, '7', day(-3, 9, 0)),
    article(2, '7', day(-1, 23, 58)),
    article(3, '7', day(0, 0, 1)),   // same sender, 3 minutes later, but the next day
    article(4, '7', day(0, 0, 4)),   // grouped
    article(5, '8', day(0, 0, 5)),   // another sender
    article(6, '8', day(0, 0, 20)),  // more than 5 minutes later
  );
  decorateLog(list);
  const mark = (node, name) => (node.classList.contains(name) ? '+' : '');
  const shape = () => [...list.children].map((node) => (node.localName === 'h3'
    ? `# ${node.textContent}`
    : `${mark(node, 'continued')}${node.dataset.seq}${mark(node, 'continues')}`));
  const first = shape();
  // Removing a day's only message removes its heading; decorating twice changes nothing.
  list.children[1].remove();
  decorateLog(list);
  decorateLog(list);
  const second = shape();
  // A few hundred messages decorate quickly.
  const big = document.createElement('div');
  for (let seq = 1; seq <= 400; seq++) {
    const date = day(-4 + Math.floor((seq - 1) / 100), 10, seq % 60); // 100 a day
    big.append(article(seq, String(seq % 3 ? 7 : 8), date));
  }
  const start = performance.now();
  for (let i = 0; i < 20; i++) decorateLog(big);
  const ms = (performance.now() - start) / 20;
  return { first, second, ms, headings: big.querySelectorAll('h3').length };
}"""


def test_day_headings_across_dates(pair: Pair) -> None:
    """Messages cannot be dated in the past over the API, so logdecor.js is run
    in the page on articles spanning several days."""
    bob = pair.bob
    result = bob.page.evaluate(DECORATE_JS)
    first = result["first"]
    assert first[0].startswith("# ") and first[0] not in ("# Today", "# Yesterday")
    # "+" marks the link between grouped messages: "3+" continues in "+4".
    assert first[1:] == ["1", "# Yesterday", "2", "# Today", "3+", "+4", "5", "6"]
    assert result["second"] == ["# Yesterday", "2", "# Today", "3+", "+4", "5", "6"]
    assert result["headings"] == 4
    print(f"\ndecorateLog on 400 articles: {result['ms']:.2f} ms")
    assert result["ms"] < 50


def test_edited_marker(pair: Pair) -> None:
    alice, bob, _ = pair
    alice.send("first draft")
    message = alice.articles("first draft")
    message.hover()
    message.get_by_role("button", name="Edit").click()
    editor = alice.page.get_by_role("textbox", name="Edit message")
    editor.fill("final **text**")
    editor.press("Enter")
    for user in (alice, bob):
        edited = user.articles("final text")
        expect(edited).to_contain_text("(edited)")
        expect(edited.locator(".body strong")).to_have_text("text")
    expect(bob.articles("first draft")).to_have_count(0)


def _png(width: int, height: int) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 220))
    for x in range(width):
        for y in range(max(0, x * height // width - 8), min(height, x * height // width + 8)):
            image.putpixel((x, y), (250, 200, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_avatar_picture_replaces_initials(pair: Pair) -> None:
    bob = pair.bob
    bob.send("my face")
    message = bob.articles("my face")
    expect(message.locator(".initials")).to_be_visible()
    bob.page.get_by_role("button", name="Profile").click()
    dialog = bob.page.get_by_role("dialog", name="Profile")
    dialog.get_by_label("Avatar", exact=True).set_input_files(
        {"name": "me.png", "mimeType": "image/png", "buffer": _png(120, 120)}
    )
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    # The picture takes the initials' place (others see it once they load Bob again).
    avatar = message.locator("img.avatar")
    expect(avatar).to_have_attribute("src", re.compile("^blob:"))
    expect(avatar).to_be_visible()
    expect(message.locator(".initials")).to_be_hidden()


def test_image_viewer(pair: Pair, shots: Path) -> None:
    alice, bob, _ = pair
    attach = alice.page.get_by_label("Attach", exact=True)
    attach.set_input_files({"name": "wide.png", "mimeType": "image/png", "buffer": _png(900, 500)})
    alice.send("a picture")

    preview = bob.articles("a picture").get_by_role("button", name="wide.png")
    expect(preview.get_by_role("img", name="wide.png")).to_have_attribute(
        "src", re.compile("^blob:")
    )
    preview.click()
    viewer = bob.page.get_by_role("dialog", name="wide.png")
    expect(viewer).to_be_visible()
    full = viewer.get_by_role("img", name="wide.png")
    # The file itself, not the 320 px thumbnail.
    expect(full).to_have_js_property("naturalWidth", 900)
    close = viewer.get_by_role("button", name="Close")
    expect(close).to_be_focused()
    bob.shot(shots / "render-viewer.png")
    assert_accessible(bob.page, "image viewer")
    bob.page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(preview).to_be_focused()

    preview.press("Enter")
    expect(viewer).to_be_visible()
    close.click()
    expect(viewer).to_be_hidden()
    expect(preview).to_be_focused()


MIXED = [
    "Morning! Notes from **yesterday's** call are in https://example.com/notes",
    "Three things:\n1. ship the *release*\n2. update `CHANGELOG.md`\n3. tell the team",
    "```\n$ chat-server --port 8080\nlistening on :8080\n```",
    "> Is the new build out?\n\nYes, since 14:00 ~~13:00~~.",
]


def test_screenshots_light_and_dark(pair: Pair, shots: Path) -> None:
    alice, bob, _ = pair
    for text in MIXED:
        _send_lines(alice, text)
    table = "| when | what |\n|---|---|\n| 9:00 | standup |"
    _send_lines(bob, f"Thanks @{alice.username}! Table:\n\n{table}")
    expect(alice.articles("Thanks")).to_have_count(1)
    page = alice.page
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.mouse.move(0, 0)
        alice.shot(shots / f"render-{scheme}.png")
        assert_accessible(alice.page, f"markdown messages ({scheme})")
    # Hovering a grouped message shows its time in the gutter.
    grouped = alice.articles("Three things")
    grouped.hover()
    expect(grouped.locator("time.message-time")).to_have_css("opacity", "1")
    alice.shot(shots / "render-dark-hover.png")
    page.emulate_media(color_scheme="light")

    # The thread panel renders the same way: its replies group too.
    alice.articles("Morning!").hover()
    alice.articles("Morning!").get_by_role("button", name="Reply").click()
    thread = page.get_by_role("region", name="Thread")
    reply_box = thread.get_by_role("textbox", name="Reply")
    for text, shown in (("*first* reply", "first reply"), ("with `code`", "with code")):
        reply_box.fill(text)
        reply_box.press("Enter")
        expect(thread.get_by_role("article").filter(has_text=shown)).to_have_count(1)
    replies = thread.get_by_role("log", name="Replies").get_by_role("article")
    expect(replies.nth(1)).to_have_class(re.compile(r"\bcontinued\b"))
    expect(thread.get_by_role("heading", name="Today")).to_have_count(1)
    expect(replies.nth(0).locator("em")).to_have_text("first")
    alice.shot(shots / "render-thread.png")
    assert_accessible(alice.page, "thread panel")
    thread.get_by_role("button", name="Close thread").click()

    # A phone: nothing wider than the screen (code and tables scroll inside).
    page.set_viewport_size({"width": 375, "height": 812})
    alice.articles("standup").scroll_into_view_if_needed()
    alice.shot(shots / "render-phone.png")
    assert_accessible(alice.page, "messages on a phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
