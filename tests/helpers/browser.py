"""Browser tests' tools: Debian's chromium under Playwright, a page as one user
found by roles and accessible names (API.md "Built-in web client"), and plain
REST calls to a server process for the setup a test does not click through."""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from . import IN_CI, PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
# Where every browser test's screenshots go (to look at after a run).
SHOTS = Path(os.environ.get("WEB_SHOTS_DIR") or Path(tempfile.gettempdir()) / "chat-web-shots")


def shots_dir(part: str) -> Path:
    """SHOTS/<part>, made if missing."""
    path = SHOTS / part
    path.mkdir(parents=True, exist_ok=True)
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A rough accessible name of the focused element: enough for the client's controls.
FOCUSED_NAME_JS = """(() => {
  const el = document.activeElement;
  return el.getAttribute('aria-label') || el.labels?.[0]?.textContent || el.textContent;
})()"""


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system's chromium (never a downloaded one): skipped when missing, a
    failure under CI=true."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install it with apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def rest(base_url: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    """One call to /api/v1; the decoded JSON body (None when empty). A failure
    raises AssertionError with the status and body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base_url}/api/v1{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path} → {exc.code}: {exc.read()!r}") from exc
    return json.loads(raw) if raw else None


# axe-core's impacts that fail a test; "moderate" and "minor" ones are printed.
BLOCKING_IMPACTS = ("serious", "critical")
_AXE = Axe()


def sign_up_first_admin(url: str, data_dir: Path, username: str = "boss") -> str:
    """Makes the server's first admin through the setup token its banner names
    (<data dir>/setup_token); the admin's access token."""
    token = (data_dir / "setup_token").read_text().strip()
    body = {"username": username, "password": PASSWORD, "invite": token}
    admin = rest(url, "POST", "/auth/signup", body=body)
    assert admin["user"]["is_admin"] is True
    return str(admin["access_token"])


def assert_accessible(page: Page, screen: str) -> None:
    """Runs axe-core (the copy bundled with axe-playwright-python) on the page as
    it is now; fails on any serious or critical violation, listing each with the
    elements it found. `screen` names what is shown, for the message."""
    results = _AXE.run(page).response
    found = [
        f"{violation['impact']}: {violation['id']} ({violation['help']}) at "
        + "; ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        for violation in results["violations"]
    ]
    blocking = [line for line in found if line.startswith(BLOCKING_IMPACTS)]
    if found:
        print(f"axe on {screen}:\n  " + "\n  ".join(found))
    assert not blocking, f"accessibility violations on {screen}:\n" + "\n".join(blocking)


class WebUser:
    """One browser page as one user. Uncaught page errors are collected and
    must stay empty (`assert_no_problems`)."""

    def __init__(self, page: Page, label: str) -> None:
        self.page = page
        self.label = label
        self.problems: list[str] = []
        # Uncaught exceptions and CSP violations are bugs; failed requests
        # while the server is down are expected and not collected.
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )

    def shot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path)

    # --- signing in ---

    def log_in(self, username: str, password: str = PASSWORD) -> None:
        self.page.goto("/")
        self.page.get_by_role("textbox", name="Username").fill(username)
        self.page.get_by_role("textbox", name="Password").fill(password)
        self.page.get_by_role("button", name="Log in", exact=True).click()
        self.expect_signed_in()

    def fill_sign_up(self, username: str, display_name: str) -> None:
        self.page.get_by_role("textbox", name="Username").fill(username)
        self.page.get_by_role("textbox", name="Password").fill(PASSWORD)
        self.page.get_by_role("textbox", name="Display name").fill(display_name)

    def expect_signed_in(self) -> None:
        expect(self.page.get_by_role("button", name="Log out")).to_be_visible()
        expect(self.page.get_by_role("status")).to_have_text("Connected")

    def expect_signed_out(self) -> None:
        expect(self.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
        expect(self.page.get_by_role("button", name="Log out")).to_be_hidden()

    # --- rooms and messages ---

    @property
    def rooms(self) -> Locator:
        return self.page.get_by_role("navigation", name="Rooms")

    def room_button(self, name: str) -> Locator:
        return self.rooms.get_by_role("button", name=name)

    def open_room(self, name: str) -> None:
        self.room_button(name).click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def create_room(self, name: str, private: bool = False) -> None:
        self.page.get_by_role("button", name="New room").click()
        self.page.get_by_role("textbox", name="Room name").fill(name)
        if private:
            self.page.get_by_role("checkbox", name="Private").check()
        self.page.get_by_role("button", name="Create").click()
        expect(self.page.get_by_role("heading", name=name, exact=True)).to_be_visible()

    def articles(self, text: str) -> Locator:
        log = self.page.get_by_role("log", name="Messages")
        return log.get_by_role("article").filter(has_text=text)

    def send(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    # --- dialogs ---

    def dialog(self, heading: str) -> Locator:
        """The open dialog titled `heading`."""
        return self.page.get_by_role("dialog", name=heading)

    def confirm(self) -> None:
        """Answers the confirmation dialog with its `Confirm` button."""
        self.page.get_by_role("button", name="Confirm").click()

    def alert(self, text: str | re.Pattern[str]) -> Locator:
        """The page's alerts (errors, notices) that hold `text`."""
        return self.page.get_by_role("alert").filter(has_text=text)

    def assert_no_problems(self) -> None:
        assert self.problems == [], f"{self.label}: {self.problems}"


def close_all(users: list[WebUser]) -> None:
    """A fixture's teardown: close every page's context, then fail on any page's
    problems (all closed first, so one failure leaves no browser context open)."""
    for user in users:
        user.page.context.close()
    for user in users:
        user.assert_no_problems()


def new_user(browser: Browser, base_url: str, label: str) -> WebUser:
    """A page in a browser context of its own (own localStorage) at a desktop
    size, allowed to use the clipboard."""
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": 1100, "height": 760},
        permissions=["clipboard-read", "clipboard-write"],
    )
    return WebUser(context.new_page(), label)
