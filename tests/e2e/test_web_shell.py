"""Browser tests of the web client's shell (chat_server/web/app.js, router.js,
composer.js, switcher.js, outage.js): room addresses and history, drafts, the
quick switcher, Escape, Up to edit, the outage banner during a server restart,
the phone layout, and axe-core on every screen reached.

One `python run.py` per module (its first user, `boss`, is the admin); Debian's
chromium under Playwright plays the users, found by role and accessible name
(API.md "Built-in web client"). Screenshots go to tests/helpers/browser.SHOTS
($WEB_SHOTS_DIR, or chat-web-shots in the temporary folder).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from ..helpers import PASSWORD
from ..helpers.browser import (
    FOCUSED_NAME_JS,
    WebUser,
    assert_accessible,
    rest,
    shots_dir,
    sign_up_first_admin,
)
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

RECONNECT_TIMEOUT_MS = 30_000


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


@dataclass
class Site:
    server: ServerProcess
    admin: str  # the admin's username
    admin_token: str

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        return rest(self.server.url, method, path, token, body)

    def account(self, prefix: str, display_name: str | None = None) -> tuple[str, str, int]:
        """A new account over REST: (username, access token, id)."""
        username = _unique(prefix)
        body = {"username": username, "password": PASSWORD}
        if display_name:
            body["display_name"] = display_name
        auth = self.call("POST", "/auth/signup", body=body)
        return username, auth["access_token"], auth["user"]["id"]

    def room(self, token: str, name: str, kind: str = "public") -> int:
        return int(self.call("POST", "/rooms", token, {"name": name, "kind": kind})["id"])

    def post(self, token: str, room_id: int, body: str) -> None:
        self.call("POST", f"/rooms/{room_id}/messages", token, {"body": body})


class Shell(WebUser):
    """One browser page as one user, with screenshots named after the step."""

    def __init__(self, page: Page, label: str, shots: Path) -> None:
        super().__init__(page, label)
        self.shots = shots

    def shot(self, name: str) -> None:  # type: ignore[override]  # named, in `shots`
        self.page.screenshot(path=self.shots / f"shell-{self.label}-{name}.png")

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status")

    @property
    def box(self) -> Locator:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    @property
    def log(self) -> Locator:
        return self.page.get_by_role("log", name="Messages")

    def heading(self, name: str) -> Locator:
        return self.page.get_by_role("heading", name=name, exact=True)

    def focused_name(self) -> str:
        return str(self.page.evaluate(FOCUSED_NAME_JS)).strip()

    def expect_room(self, name: str, room_id: int) -> None:
        expect(self.heading(name)).to_be_visible()
        expect(self.page).to_have_url(re.compile(rf"/#/rooms/{room_id}$"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web-shell")
    settings = {"CHAT_DATA_DIR": str(root / "data"), "CHAT_MAX_UPLOAD_MB": "1"}
    server = ServerProcess(settings, root).start()
    try:
        yield Site(server, "boss", sign_up_first_admin(server.url, root / "data"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_dir("shell")


@pytest.fixture
def new_shell(browser: Browser, site: Site, shots: Path) -> Iterator[Callable[..., Shell]]:
    """Pages, each in a browser context of its own (own localStorage)."""
    shells: list[Shell] = []

    def make(label: str, **context: Any) -> Shell:
        options: dict[str, Any] = {"viewport": {"width": 1100, "height": 760}} | context
        context_made = browser.new_context(base_url=site.server.url, **options)
        shell = Shell(context_made.new_page(), label, shots)
        shells.append(shell)
        return shell

    yield make
    for shell in shells:
        shell.page.context.close()
    for shell in shells:
        shell.assert_no_problems()


def test_rooms_have_addresses_history_and_reload(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    username, token, _ = site.account("ana")
    first, second = _unique("first"), _unique("second")
    first_id, second_id = site.room(token, first), site.room(token, second)
    for n in range(1, 81):
        site.post(token, second_id, f"line {n:02d}")
    ana = new_shell("ana")
    ana.log_in(username)
    expect(ana.page).to_have_url(re.compile(r"/$"))

    ana.open_room(first)
    ana.expect_room(first, first_id)
    ana.open_room(second)
    ana.expect_room(second, second_id)
    ana.page.go_back()
    ana.expect_room(first, first_id)
    expect(ana.room_button(first)).to_have_attribute("aria-current", "page")
    ana.page.go_forward()
    ana.expect_room(second, second_id)
    expect(ana.log.get_by_role("article").filter(has_text="line 80")).to_be_visible()

    # Scrolled back to an older message, a reload opens the room there.
    ana.log.evaluate("log => { log.scrollTop = 0; }")
    target = ana.log.get_by_role("article").filter(has_text="line 20")
    expect(target).to_have_count(1)  # the older page came in
    target.evaluate("article => article.scrollIntoView({ block: 'start' })")
    ana.page.wait_for_function(
        "seq => sessionStorage.getItem('chat.anchor.' + seq[0]) === String(seq[1])",
        arg=[second_id, 20],
    )
    ana.page.reload()
    ana.expect_signed_in()
    ana.expect_room(second, second_id)
    expect(ana.log.get_by_role("article").filter(has_text="line 20")).to_be_in_viewport()
    expect(ana.log.get_by_role("article").filter(has_text="line 80")).not_to_be_in_viewport()

    # An address naming a room the user is not in opens no room.
    ana.page.goto(f"/#/rooms/{first_id + second_id + 1000}")
    ana.expect_signed_in()
    expect(ana.page.get_by_text("Choose a room, or start a new one.")).to_be_visible()
    expect(ana.page).to_have_url(re.compile(r"/$"))


def test_drafts_per_room_survive_reload_and_stay_with_their_user(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    username, token, _ = site.account("bea")
    other, other_token, _ = site.account("cid")
    red, blue = _unique("red"), _unique("blue")
    red_id = site.room(token, red)
    site.room(token, blue)
    site.call("POST", f"/rooms/{red_id}/join", other_token)
    bea = new_shell("bea")
    bea.log_in(username)

    bea.open_room(red)
    bea.box.fill("half a thought for red")
    bea.open_room(blue)
    expect(bea.box).to_have_value("")
    bea.box.fill("blue draft")
    bea.open_room(red)
    expect(bea.box).to_have_value("half a thought for red")

    bea.page.reload()
    bea.expect_signed_in()
    expect(bea.heading(red)).to_be_visible()
    expect(bea.box).to_have_value("half a thought for red")
    bea.open_room(blue)
    expect(bea.box).to_have_value("blue draft")
    bea.box.press("Enter")  # sent: the draft goes
    expect(bea.articles("blue draft")).to_have_count(1)
    expect(bea.box).to_have_value("")
    bea.page.reload()
    bea.expect_signed_in()
    expect(bea.heading(blue)).to_be_visible()
    expect(bea.box).to_have_value("")

    # Another account on the same browser does not see Bea's drafts.
    bea.page.get_by_role("button", name="Log out").click()
    bea.expect_signed_out()
    bea.log_in(other)
    bea.open_room(red)
    expect(bea.box).to_have_value("")


def test_quick_switcher_by_keyboard(new_shell: Callable[..., Shell], site: Site) -> None:
    username, token, _ = site.account("dan")
    _, _, peer_id = site.account("eve", "Eve Quick")
    tag = secrets.token_hex(3)
    names = [f"alpha {tag}", f"beta {tag}", f"gamma {tag}"]
    ids = [site.room(token, name) for name in names]
    site.call("POST", "/dm", token, {"user_id": peer_id})
    dan = new_shell("dan")
    dan.log_in(username)
    dan.open_room(names[0])
    expect(dan.box).to_be_focused()

    switcher = dan.dialog("Switch room")
    dan.page.keyboard.press("Control+k")
    expect(switcher).to_be_visible()
    find = switcher.get_by_role("combobox", name="Find a room")
    expect(find).to_be_focused()
    options = switcher.get_by_role("option")
    expect(options).to_have_count(4)  # three rooms and the DM
    dan.page.keyboard.type(tag)
    expect(options).to_have_text([re.compile(name) for name in names])
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    dan.page.keyboard.press("ArrowDown")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    assert_accessible(dan.page, "quick switcher")
    dan.shot("switcher")
    dan.page.keyboard.press("Enter")
    expect(switcher).to_be_hidden()
    dan.expect_room(names[1], ids[1])

    # Fuzzy-ish: letters in order; a DM by its peer's name.
    dan.page.keyboard.press("Meta+k")  # as on a Mac
    dan.page.keyboard.type("gmm")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text(names[2])
    find.fill("eve q")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("Eve Quick")
    dan.page.keyboard.press("Enter")
    expect(dan.heading("Eve Quick")).to_be_visible()

    # Escape closes it and gives focus back.
    dan.page.keyboard.press("Control+k")
    expect(switcher).to_be_visible()
    dan.page.keyboard.press("Escape")
    expect(switcher).to_be_hidden()
    expect(dan.box).to_be_focused()


def test_escape_closes_every_dialog_and_focus_returns(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    username, token, _ = site.account("fay")
    room = _unique("dialogs")
    site.room(token, room)
    boss = new_shell("boss")
    boss.log_in(site.admin)
    fay = new_shell("fay")
    fay.log_in(username)
    fay.open_room(room)

    # (page, opener's name, the dialog's accessible name)
    screens = [
        (fay, "New room", "New room"),
        (fay, "Browse rooms", "Public rooms"),
        (fay, "Direct message", "Direct message"),
        (fay, "Room settings", None),
        (fay, "Notifications", None),
        (fay, "Profile", "Profile"),
        (fay, "Pinned", "Pinned messages"),
        (boss, "Admin", None),
    ]
    for shell, opener_name, dialog_name in screens:
        # The Notifications control's name goes on with the room's level.
        opener = shell.page.get_by_role("button", name=re.compile(rf"^{opener_name}\b"))
        opener.focus()
        shell.page.keyboard.press("Enter")
        dialog = shell.dialog(dialog_name) if dialog_name else shell.page.get_by_role("dialog").last
        expect(dialog).to_be_visible()
        assert_accessible(shell.page, f"{opener_name} dialog")
        shell.page.keyboard.press("Escape")
        expect(shell.page.get_by_role("dialog")).to_have_count(0)
        expect(opener).to_be_focused()


def test_up_in_empty_box_edits_last_own_message(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    username, token, _ = site.account("gus")
    _, other_token, _ = site.account("hal")
    room = _unique("upedit")
    room_id = site.room(token, room)
    site.call("POST", f"/rooms/{room_id}/join", other_token)
    gus = new_shell("gus")
    gus.log_in(username)
    gus.open_room(room)
    gus.send("first of mine")
    gus.send("second of mine")
    site.post(other_token, room_id, "someone else's")
    expect(gus.articles("someone else's")).to_have_count(1)

    # Not empty: Up moves the caret, nothing opens.
    gus.box.fill("typing")
    gus.box.press("ArrowUp")
    expect(gus.page.get_by_role("textbox", name="Edit message")).to_have_count(0)
    gus.box.fill("")
    gus.box.press("ArrowUp")
    editor = gus.page.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("second of mine")
    editor.fill("second, edited")
    editor.press("Enter")
    expect(gus.articles("second, edited")).to_contain_text("(edited)")
    expect(gus.articles("first of mine")).not_to_contain_text("(edited)")


def test_sizes_shown_in_kb_and_mb(new_shell: Callable[..., Shell], site: Site) -> None:
    username, token, _ = site.account("nia")
    room = _unique("sizes")
    site.room(token, room)
    nia = new_shell("nia")
    nia.log_in(username)
    nia.open_room(room)
    attach = nia.page.get_by_label("Attach", exact=True)
    # Over the server's 1 MB limit: refused, and the limit reads in MB.
    big = {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 1_500_000}
    attach.set_input_files(big)
    chip = nia.page.get_by_role("list", name="Files to send").get_by_role("listitem")
    expect(chip).to_contain_text(re.compile(r"failed: .*over 1\.0 MB"))
    expect(chip).not_to_contain_text("bytes")
    nia.page.get_by_role("button", name="Remove big.bin").click()
    small = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"n" * 3000}
    attach.set_input_files(small)
    nia.send("two notes")
    expect(nia.articles("two notes")).to_contain_text("notes.txt (3 KB)")


def test_outage_banner_while_the_server_restarts(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    username, token, _ = site.account("ivy")
    _, peer_token, _ = site.account("jon", "Jon Rest")
    room = _unique("outage")
    room_id = site.room(token, room)
    site.call("POST", f"/rooms/{room_id}/join", peer_token)
    ivy = new_shell("ivy")
    ivy.log_in(username)
    ivy.open_room(room)
    site.post(peer_token, room_id, "from jon before")
    ivy.send("from ivy before")
    expect(ivy.log.get_by_role("article")).to_have_count(2)
    banner = ivy.page.get_by_role("region", name="Connection lost")
    expect(banner).to_be_hidden()
    jon_dot = ivy.articles("from jon before").locator(".presence")

    site.server.stop()
    try:
        expect(ivy.status).to_have_text("Reconnecting…")
        expect(banner).to_be_visible()
        # Back-off grows while the server stays down: wait for a countdown worth skipping.
        expect(banner).to_contain_text(
            re.compile(r"Reconnecting in ([3-9]|\d\d) s…"), timeout=20_000
        )
        expect(jon_dot).to_have_attribute("title", "Presence unknown")
        expect(banner.get_by_role("button", name="Retry now")).to_be_visible()
        assert_accessible(ivy.page, "outage banner")
        ivy.shot("outage-banner")
        # A REST call meanwhile says so in words, not "Failed to fetch".
        ivy.page.get_by_role("button", name="Browse rooms").click()
        expect(ivy.dialog("Public rooms").get_by_role("alert")).to_have_text(
            "Can't reach the server. Check your connection."
        )
        ivy.page.keyboard.press("Escape")
    finally:  # the module's other tests use this server too
        site.server.start()
    sent = [f"from jon after {n}" for n in range(3)]
    for body in sent:
        site.post(peer_token, room_id, body)
    banner.get_by_role("button", name="Retry now").click()
    expect(ivy.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(banner).to_be_hidden()
    expect(jon_dot).to_have_attribute("title", "Offline")  # Jon uses REST only
    for body in ["from jon before", "from ivy before", *sent]:
        expect(ivy.articles(body)).to_have_count(1)
    expect(ivy.log.get_by_role("article")).to_have_count(5)
    ivy.shot("after-outage")


def test_outage_banner_when_the_page_cannot_start(
    new_shell: Callable[..., Shell], site: Site
) -> None:
    """Loaded while the API does not answer (a proxy up, the server not yet):
    the same banner, and `Retry now` starts at once."""
    username, _, _ = site.account("ola")
    ola = new_shell("ola")
    ola.log_in(username)
    unreachable = "**/api/v1/users/me"
    ola.page.route(unreachable, lambda route: route.abort())
    ola.page.reload()
    banner = ola.page.get_by_role("region", name="Connection lost")
    expect(banner).to_contain_text(re.compile(r"Reconnecting (in \d+ s|now)…"))
    expect(ola.status).to_have_text("Reconnecting…")
    # Let the back-off grow to a wait worth skipping, then skip it.
    expect(banner).to_contain_text(re.compile(r"Reconnecting in ([4-9]|\d\d) s…"), timeout=20_000)
    ola.page.unroute(unreachable)
    banner.get_by_role("button", name="Retry now").click()
    expect(ola.status).to_have_text("Connected", timeout=3_000)
    expect(banner).to_be_hidden()


def test_phone_layout_list_then_room_then_back(new_shell: Callable[..., Shell], site: Site) -> None:
    username, token, _ = site.account("kai")
    room = _unique("pocket")
    room_id = site.room(token, room)
    site.post(token, room_id, "already here")
    kai = new_shell(
        "kai-phone", viewport={"width": 375, "height": 812}, has_touch=True, is_mobile=True
    )
    kai.log_in(username)
    assert kai.page.evaluate("matchMedia('(pointer: coarse)').matches")

    # The room list is a screen of its own.
    expect(kai.rooms).to_be_visible()
    expect(kai.log).to_be_hidden()
    expect(kai.room_button(room)).to_be_visible()
    assert kai.page.evaluate("document.documentElement.scrollWidth") <= 375
    assert_accessible(kai.page, "phone room list")
    kai.shot("phone-list")

    kai.room_button(room).tap()
    kai.expect_room(room, room_id)
    expect(kai.rooms).to_be_hidden()
    expect(kai.log).to_be_visible()
    box = kai.log.bounding_box()
    assert box is not None and box["width"] >= 370
    # No Shift+Enter on a touch keyboard: the hint leaves it out.
    expect(kai.box).to_have_attribute("placeholder", "Write a message")
    composer = kai.page.get_by_role("button", name="Send").bounding_box()
    assert composer is not None and composer["y"] + composer["height"] <= 812

    kai.send("from the phone")
    mine = kai.articles("from the phone")
    edit = mine.get_by_role("button", name="Edit")
    expect(edit).to_be_hidden()  # no hover on touch: a tap shows the buttons
    mine.locator(".body").tap()
    expect(edit).to_be_visible()
    expect(kai.articles("already here").get_by_role("button", name="Edit")).to_be_hidden()
    assert_accessible(kai.page, "phone room")
    kai.shot("phone-room")

    kai.page.get_by_role("button", name="Back to rooms").tap()
    expect(kai.rooms).to_be_visible()
    expect(kai.log).to_be_hidden()
    expect(kai.page).to_have_url(re.compile(r"/$"))
    # `Back to rooms` stepped back in history: Forward opens the room again.
    kai.page.go_forward()
    kai.expect_room(room, room_id)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screens_pass_axe(new_shell: Callable[..., Shell], site: Site, scheme: str) -> None:
    username, token, _ = site.account("lou", "Lou Look")
    _, peer_token, _ = site.account("max", "Max Mate")
    room = _unique("looks")
    room_id = site.room(token, room)
    site.call("POST", f"/rooms/{room_id}/join", peer_token)
    site.post(peer_token, room_id, "a message from **Max**, with a [link](https://example.com)")
    site.post(token, room_id, "and one of mine")
    lou = new_shell(f"lou-{scheme}", color_scheme=scheme)
    lou.page.goto("/")
    expect(lou.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    assert_accessible(lou.page, f"sign-in ({scheme})")
    lou.shot("sign-in")
    lou.log_in(username)
    assert_accessible(lou.page, f"room list ({scheme})")
    lou.open_room(room)
    expect(lou.articles("and one of mine")).to_have_count(1)
    lou.articles("and one of mine").hover()
    assert_accessible(lou.page, f"open room ({scheme})")
    lou.shot("room")
