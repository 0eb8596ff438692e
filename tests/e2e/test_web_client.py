"""Browser tests of the built-in web client (chat_server/web/).

The real server runs as a subprocess (`python run.py`) and Debian's chromium,
driven by Playwright, plays the users. Controls are found by role and
accessible name, so the names promised in API.md's "Built-in web client"
section are what is tested. Screenshots of key moments go to a temporary
folder whose path is printed (run with -s to see it).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect

from ..helpers import PASSWORD
from ..helpers.browser import FOCUSED_NAME_JS, WebUser, rest, shots_dir
from ..helpers.servers import REPO, free_port

pytestmark = pytest.mark.e2e

RECONNECTING = "Reconnecting…"
# Back-off tops out at 10 s, so a restarted server is found within ~10 s.
RECONNECT_TIMEOUT_MS = 30_000


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


class ServerProcess:
    """`python run.py` on a fixed port and data dir; can be killed and restarted."""

    def __init__(self, port: int, data_dir: Path, log_path: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Only our settings: a CHAT_DATABASE_URL or CHAT_REDIS_URL from the
        # outside environment must not leak into the test server.
        env = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
        env |= {
            "CHAT_PORT": str(self.port),
            "CHAT_DATA_DIR": str(self.data_dir),
            "CHAT_BCRYPT_ROUNDS": "4",
            "CHAT_AUTH_RATE": "0",
            "CHAT_MESSAGE_RATE": "0",
            "CHAT_REGISTRATION": "open",
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "run.py"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"server did not answer /healthz within 30 s:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """Simulates a crash: SIGKILL, no graceful close of the WebSockets."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """One REST call to /api/v1; returns the decoded JSON body (None if empty)."""
        return rest(self.base_url, method, path, token, body)


class Client(WebUser):
    """One browser page as one user, with helpers named after what a user does."""

    def __init__(self, page: Page, label: str, shots: Path) -> None:
        super().__init__(page, label)
        self.shots = shots

    def shot(self, name: str) -> None:  # type: ignore[override]  # numbered, in `shots`
        index = len(list(self.shots.iterdir())) + 1
        self.page.screenshot(path=self.shots / f"{index:02d}-{self.label}-{name}.png")

    def open(self) -> None:
        self.page.goto("/")
        expect(self.page.get_by_role("button", name="Log in")).to_be_visible()

    def sign_up(self, username: str, display_name: str) -> None:
        self.open()
        page = self.page
        page.get_by_role("textbox", name="Username").fill(username)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("textbox", name="Display name").fill(display_name)
        page.get_by_role("button", name="Sign up").click()
        self.expect_signed_in()

    def log_in(self, username: str) -> None:
        self.open()
        page = self.page
        page.get_by_role("textbox", name="Username").fill(username)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        self.expect_signed_in()

    def expect_signed_in(self) -> None:
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()
        # The sign-in form is gone, so only dialogs can show a Username field.
        expect(self.page.get_by_role("textbox", name="Username")).to_have_count(0)
        expect(self.status).to_have_text("Connected")

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status")

    @property
    def rooms(self) -> Locator:
        return self.page.get_by_role("navigation", name="Rooms")

    def room_button(self, name: str) -> Locator:
        return self.rooms.get_by_role("button", name=name)

    @property
    def log(self) -> Locator:
        return self.page.get_by_role("log", name="Messages")

    def articles(self, text: str | None = None) -> Locator:
        articles = self.log.get_by_role("article")
        return articles if text is None else articles.filter(has_text=text)

    def create_room(self, name: str, private: bool = False) -> None:
        page = self.page
        page.get_by_role("button", name="New room").click()
        page.get_by_role("textbox", name="Room name").fill(name)
        if private:
            page.get_by_role("checkbox", name="Private").check()
        page.get_by_role("button", name="Create").click()
        expect(self.room_button(name)).to_be_visible()
        expect(page.get_by_role("heading", name=name)).to_be_visible()

    def join(self, room_name: str) -> None:
        page = self.page
        page.get_by_role("button", name="Browse rooms").click()
        entry = page.get_by_role("listitem").filter(has_text=room_name)
        entry.get_by_role("button", name="Join").click()
        expect(self.room_button(room_name)).to_be_visible()
        expect(page.get_by_role("heading", name=room_name)).to_be_visible()

    def open_room(self, name: str) -> None:
        self.room_button(name).click()
        expect(self.page.get_by_role("heading", name=name)).to_be_visible()

    def send(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    def expect_once(self, text: str) -> None:
        expect(self.articles(text)).to_have_count(1)

    def assert_no_problems(self) -> None:
        assert self.problems == [], f"{self.label}: {self.problems}"


def _png(width: int, height: int) -> bytes:
    """A blue picture with a yellow diagonal band, easy to spot in screenshots."""
    image = Image.new("RGB", (width, height), (30, 120, 220))
    for x in range(width):
        for y in range(max(0, x * height // width - 8), min(height, x * height // width + 8)):
            image.putpixel((x, y), (250, 200, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("web-client-server")
    process = ServerProcess(free_port(), root / "data", root / "server.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    return shots_dir("client")


@pytest.fixture
def new_client(
    browser: Browser, server: ServerProcess, shots: Path
) -> Iterator[Callable[..., Client]]:
    """Makes clients, each in its own browser context (own localStorage)."""
    clients: list[Client] = []

    def make(label: str, width: int = 1100, height: int = 750) -> Client:
        context = browser.new_context(
            base_url=server.base_url, viewport={"width": width, "height": height}
        )
        client = Client(context.new_page(), label, shots)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.page.context.close()
    for client in clients:
        client.assert_no_problems()


def test_live_messages_in_public_room_and_dm(new_client: Callable[..., Client]) -> None:
    alice, bob = new_client("alice"), new_client("bob")
    alice_name, bob_name = _unique("alice"), _unique("bob")
    alice.sign_up(alice_name, "Alice Able")
    bob.sign_up(bob_name, "Bob Baker")
    room = _unique("lobby")
    alice.create_room(room)
    bob.join(room)

    alice.send("hello from alice")
    bob.expect_once("hello from alice")
    expect(bob.articles("hello from alice")).to_contain_text("Alice Able")

    # Typing shows on the other side; the Send button sends too.
    bob.page.get_by_role("textbox", name="Message").fill("hi alice")
    expect(alice.page.get_by_text("Bob Baker is typing…")).to_be_visible()
    bob.page.get_by_role("button", name="Send").click()
    alice.expect_once("hi alice")
    expect(alice.page.get_by_text("Bob Baker is typing…")).to_have_count(0)
    bob.expect_once("hi alice")

    # Shift+Enter adds a line instead of sending.
    box = alice.page.get_by_role("textbox", name="Message")
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    box.press("Enter")
    expect(bob.articles("line one")).to_contain_text("line one\nline two")
    alice.shot("public-room")
    bob.shot("public-room")

    # Edit own message: the body becomes a text box, saved with Enter.
    alice.articles("hello from alice").get_by_role("button", name="Edit").click()
    editor = alice.page.get_by_role("textbox", name="Edit message")
    editor.fill("hello, edited")
    editor.press("Enter")
    bob.expect_once("hello, edited")
    expect(bob.articles("hello from alice")).to_have_count(0)
    # Others' messages cannot be edited or deleted.
    expect(alice.articles("hi alice").get_by_role("button", name="Edit")).to_have_count(0)

    # Delete own message after confirming in a dialog.
    alice.articles("line one").get_by_role("button", name="Delete").click()
    alice.page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(bob.articles("line one")).to_have_count(0)
    expect(bob.articles("This message was deleted.")).to_have_count(1)
    expect(alice.articles("This message was deleted.")).to_have_count(1)

    # A direct message, started by username, named after the other member.
    alice.page.get_by_role("button", name="Direct message").click()
    alice.page.get_by_role("dialog").get_by_role("textbox", name="Username").fill(bob_name)
    alice.page.get_by_role("button", name="Start").click()
    expect(alice.page.get_by_role("heading", name="Bob Baker")).to_be_visible()
    expect(alice.room_button("Bob Baker")).to_be_visible()
    alice.send("psst bob")

    # Bob still looks at the lobby: the DM appears live with an unread badge.
    dm = bob.room_button("Alice Able")
    expect(dm).to_be_visible()
    expect(dm).to_have_accessible_name(re.compile(r"^Alice Able\b.*\b1\b"))
    bob.shot("dm-unread-badge")
    dm.click()
    bob.expect_once("psst bob")
    expect(dm).to_have_accessible_name("Alice Able")
    bob.send("psst alice")
    alice.expect_once("psst alice")

    # Back in the lobby for Alice, a message there badges Bob's lobby entry.
    alice.open_room(room)
    alice.send("anyone here?")
    expect(bob.room_button(room)).to_have_accessible_name(re.compile(rf"^{room}\b.*\b1\b"))
    alice.shot("dm")
    bob.shot("dm")

    alice.page.get_by_role("button", name="Log out").click()
    expect(alice.page.get_by_role("button", name="Log in")).to_be_visible()
    expect(alice.status).to_have_text("")


def test_scroll_back_loads_older_messages(
    new_client: Callable[..., Client], server: ServerProcess
) -> None:
    username = _unique("carol")
    signup = server.call("POST", "/auth/signup", body={"username": username, "password": PASSWORD})
    token = signup["access_token"]
    room_name = _unique("history")
    room = server.call("POST", "/rooms", token, {"name": room_name, "kind": "public"})
    expected = [f"seed {n:03d}" for n in range(1, 121)]
    for n, body in enumerate(expected):
        server.call(
            "POST", f"/rooms/{room['id']}/messages", token, {"body": body, "client_id": f"s{n}"}
        )

    carol = new_client("carol")
    carol.log_in(username)
    carol.open_room(room_name)
    expect(carol.articles("seed 120")).to_be_visible()
    shown = carol.articles().count()
    assert shown < 120, "the first page should not hold the whole history"
    expect(carol.articles("seed 001")).to_have_count(0)
    carol.shot("history-newest")

    for _ in range(10):
        if carol.articles("seed 001").count():
            break
        carol.log.evaluate("log => { log.scrollTop = 0; }")
        expect(carol.articles()).not_to_have_count(shown)
        shown = carol.articles().count()
    expect(carol.articles("seed 001")).to_be_visible()
    bodies = carol.log.locator("article .body").all_inner_texts()
    assert bodies == expected
    expect(carol.page.get_by_text("This is the start of the room.")).to_be_visible()
    carol.log.evaluate("log => { log.scrollTop = 0; }")
    carol.shot("history-start")


def test_reconnects_after_server_restart(
    new_client: Callable[..., Client], server: ServerProcess
) -> None:
    dave, erin = new_client("dave"), new_client("erin")
    erin_name = _unique("erin")
    dave.sign_up(_unique("dave"), "Dave Dee")
    erin.sign_up(erin_name, "Erin Eve")
    room = _unique("restart")
    dave.create_room(room)
    erin.join(room)
    dave.send("before restart")
    erin.expect_once("before restart")

    server.kill()
    expect(dave.status).to_have_text(RECONNECTING)
    expect(erin.status).to_have_text(RECONNECTING)
    # Sent while the server is down: kept and retried with the same client_id.
    dave.send("sent while down")
    dave.expect_once("sent while down")
    dave.shot("server-down")
    erin.shot("server-down")

    server.start()
    # Very likely posted before the clients are back: it comes in the resume replay.
    login = server.call("POST", "/auth/login", body={"username": erin_name, "password": PASSWORD})
    erin_token = login["access_token"]
    room_id = next(r["id"] for r in server.call("GET", "/rooms", erin_token)["items"])
    server.call("POST", f"/rooms/{room_id}/messages", erin_token, {"body": "posted over REST"})

    expect(dave.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(erin.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    erin.send("after restart")
    for client in (dave, erin):
        for text in ("before restart", "sent while down", "posted over REST", "after restart"):
            client.expect_once(text)
        expect(client.articles()).to_have_count(4)
        expect(client.log.locator(".pending")).to_have_count(0)
    # Each sees the other online again (presence dots are decorative, so CSS).
    expect(erin.articles("before restart").locator(".presence.online")).to_have_count(1)
    expect(dave.articles("posted over REST").locator(".presence.online")).to_have_count(1)
    dave.shot("reconnected")
    erin.shot("reconnected")


def test_gap_after_long_outage_is_paged_over_rest(
    new_client: Callable[..., Client], server: ServerProcess
) -> None:
    """More than the 500 messages a resume replays: the rest come over REST."""
    sender = server.call(
        "POST", "/auth/signup", body={"username": _unique("ivan"), "password": PASSWORD}
    )
    token = sender["access_token"]
    room_name = _unique("outage")
    room = server.call("POST", "/rooms", token, {"name": room_name, "kind": "public"})
    reader_name = _unique("judy")
    server.call("POST", "/auth/signup", body={"username": reader_name, "password": PASSWORD})
    judy = new_client("judy")

    # The test cuts Judy's WebSocket while the server keeps running.
    cut = {"active": False, "routes": []}

    def route(ws: Any) -> None:
        if cut["active"]:
            ws.close()
        else:
            ws.connect_to_server()
            cut["routes"].append(ws)

    judy.page.route_web_socket(re.compile(r"/api/v1/ws$"), route)
    judy.log_in(reader_name)
    judy.join(room_name)
    expected = [f"burst {n:03d}" for n in range(521)]
    server.call("POST", f"/rooms/{room['id']}/messages", token, {"body": expected[0]})
    judy.expect_once(expected[0])

    cut["active"] = True
    for ws in cut["routes"]:
        ws.close()
    expect(judy.status).to_have_text(RECONNECTING)
    for body in expected[1:]:
        server.call("POST", f"/rooms/{room['id']}/messages", token, {"body": body})
    cut["active"] = False

    expect(judy.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(judy.articles()).to_have_count(len(expected))
    assert judy.log.locator("article .body").all_inner_texts() == expected
    judy.shot("after-gap")


def test_expired_tokens_are_refreshed_then_sign_in(new_client: Callable[..., Client]) -> None:
    lee = new_client("lee")
    lee.sign_up(_unique("lee"), "Lee Lane")
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    lee.page.route_web_socket(re.compile(r"/api/v1/ws$"), route)
    lee.page.reload()
    expect(lee.status).to_have_text("Connected")

    def spoil(*fields: str) -> str:
        """Replaces stored tokens with garbage; returns the refresh token before."""
        return lee.page.evaluate(
            """fields => {
                const session = JSON.parse(localStorage.getItem('chat.session'));
                const before = session.refresh_token;
                for (const field of fields) session[field] = 'spoiled';
                localStorage.setItem('chat.session', JSON.stringify(session));
                return before;
            }""",
            list(fields),
        )

    def stored_refresh_token() -> str:
        return lee.page.evaluate("JSON.parse(localStorage.getItem('chat.session')).refresh_token")

    # REST: a 401 is answered by one refresh, then the request succeeds.
    before = spoil("access_token")
    lee.create_room(_unique("fresh"))
    assert stored_refresh_token() not in (before, "spoiled")

    # WebSocket: a refused auth frame gets a fresh token on the next attempt.
    before = spoil("access_token")
    sockets[-1].close()
    expect(lee.status).to_have_text(RECONNECTING)
    expect(lee.status).to_have_text("Connected", timeout=RECONNECT_TIMEOUT_MS)
    assert stored_refresh_token() not in (before, "spoiled")

    # Nothing left to refresh with: back to the sign-in form.
    spoil("access_token", "refresh_token")
    lee.page.get_by_role("button", name="New room").click()
    lee.page.get_by_role("textbox", name="Room name").fill(_unique("never"))
    lee.page.get_by_role("button", name="Create").click()
    expect(lee.page.get_by_role("button", name="Log in")).to_be_visible()
    expect(lee.page.get_by_role("dialog")).to_have_count(0)
    expect(lee.page.get_by_role("alert").filter(has_text="session has ended")).to_be_visible()
    expect(lee.status).to_have_text("")


def test_attachments_and_profile(new_client: Callable[..., Client]) -> None:
    frank, gina = new_client("frank"), new_client("gina")
    frank.sign_up(_unique("frank"), "Frank Fox")
    gina.sign_up(_unique("gina"), "Gina Gale")
    room = _unique("files")
    frank.create_room(room)
    gina.join(room)

    attach = frank.page.get_by_label("Attach", exact=True)
    picture = _png(640, 480)
    attach.set_input_files({"name": "picture.png", "mimeType": "image/png", "buffer": picture})
    attach.set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just some notes\n"}
    )
    expect(frank.page.get_by_role("button", name="Remove picture.png")).to_be_visible()
    frank.send("look at this")

    message = gina.articles("look at this")
    preview = message.get_by_role("img", name="picture.png")
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    # The 320 px thumbnail, not the 640 px original.
    expect(preview).to_have_js_property("naturalWidth", 320)
    with gina.page.expect_download() as download:
        message.get_by_role("link", name="notes.txt").click()
    assert download.value.suggested_filename == "notes.txt"
    assert Path(download.value.path()).read_bytes() == b"just some notes\n"
    gina.shot("image-preview")

    # Profile: a new display name and an avatar.
    frank.page.get_by_role("button", name="Profile").click()
    dialog = frank.page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Display name").fill("Frank Renamed")
    dialog.get_by_label("Avatar", exact=True).set_input_files(
        {"name": "me.png", "mimeType": "image/png", "buffer": _png(120, 120)}
    )
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(frank.page.get_by_role("banner")).to_contain_text("Frank Renamed")
    expect(frank.articles("look at this")).to_contain_text("Frank Renamed")
    avatar = frank.articles("look at this").locator("img.avatar")
    expect(avatar).to_have_attribute("src", re.compile(r"^blob:"))
    frank.shot("profile")


def test_phone_width_layout(new_client: Callable[..., Client]) -> None:
    hana = new_client("hana-phone", width=375, height=740)
    hana.sign_up(_unique("hana"), "Hana Hill")
    room = _unique("pocket")
    hana.page.get_by_role("button", name="New room").click()
    hana.page.get_by_role("textbox", name="Room name").fill(room)
    hana.page.get_by_role("checkbox", name="Private").check()
    hana.page.get_by_role("button", name="Create").click()
    expect(hana.page.get_by_role("heading", name=room)).to_be_visible()
    hana.send("small screens work too")
    hana.expect_once("small screens work too")
    # The open room fills the screen; the room list is a screen of its own.
    expect(hana.rooms).to_be_hidden()
    log = hana.log.bounding_box()
    assert log is not None and log["width"] > 300
    assert hana.page.evaluate("document.documentElement.scrollWidth") <= 375
    hana.shot("phone")
    hana.page.get_by_role("button", name="Back to rooms").click()
    expect(hana.room_button(room)).to_be_visible()
    expect(hana.log).to_be_hidden()


def test_keyboard_only(new_client: Callable[..., Client]) -> None:
    kim = new_client("kim-keyboard")
    kim.open()
    keyboard = kim.page.keyboard

    def focused_name() -> str:
        return kim.page.evaluate(FOCUSED_NAME_JS).strip()

    def focus_ring() -> str:
        return kim.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")

    # The sign-in form starts focused on Username; Tab walks the form in order.
    assert focused_name() == "Username"
    keyboard.type(_unique("kim"))
    keyboard.press("Tab")
    keyboard.type(PASSWORD)
    keyboard.press("Tab")
    keyboard.type("Kim Key")
    keyboard.press("Tab")
    assert focused_name() == "Log in"
    keyboard.press("Tab")
    assert focused_name() == "Sign up"
    assert focus_ring() == "solid", "focus is visible"
    keyboard.press("Enter")
    kim.expect_signed_in()

    # New room: the dialog opens on Room name, Escape closes it, Enter submits.
    kim.page.get_by_role("button", name="New room").focus()
    keyboard.press("Enter")
    expect(kim.page.get_by_role("dialog")).to_be_visible()
    assert focused_name() == "Room name"
    keyboard.press("Escape")
    expect(kim.page.get_by_role("dialog")).to_be_hidden()
    keyboard.press("Enter")
    room = _unique("keys")
    keyboard.type(room)
    keyboard.press("Enter")
    expect(kim.page.get_by_role("heading", name=room)).to_be_visible()

    # The open room puts focus in the message box; Enter sends.
    assert focused_name() == "Message"
    keyboard.type("typed, not clicked")
    keyboard.press("Enter")
    kim.expect_once("typed, not clicked")
    # Stored (no longer the "Sending…" copy): it has its Edit button.
    expect(kim.articles("typed, not clicked").get_by_role("button", name="Edit")).to_have_count(1)

    # Message actions are reachable with Tab from the log, own ones last.
    kim.log.focus()
    assert focus_ring() == "solid"
    for name in ("React", "Reply", "Pin", "Edit"):
        keyboard.press("Tab")
        assert focused_name() == name
    keyboard.press("Enter")
    assert focused_name() == "Edit message"
    keyboard.press("Escape")
    assert focused_name() == "Edit"
    kim.shot("keyboard")
