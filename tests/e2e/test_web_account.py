"""Browser tests of the account page (the Profile dialog: profile.js, account.js) in
Debian's chromium against a real `python run.py`: the profile with an avatar
previewed before it is saved, the sessions list with Revoke signing the other
browser out at once, and the password change. Controls are found by role and
accessible name. Screenshots go to tests/helpers/browser.SHOTS.
"""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Callable, Iterator

import pytest
from PIL import Image
from playwright.sync_api import Browser, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, assert_accessible, close_all, rest, shots_dir
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

SHOTS = shots_dir("account")
# Another device's browser, told apart from this one in the sessions list.
LAPTOP_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
# The other session is signed out at once: well under the reconnect back-off's 10 s.
SIGNED_OUT_WITHIN_MS = 5_000


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def _png(width: int, height: int) -> bytes:
    """Left half red, right half blue: a crop would lose one of them."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    image.paste((40, 80, 200), (width // 2, 0, width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def device(browser: Browser, server: ServerProcess) -> Iterator[Callable[..., WebUser]]:
    """Opens a browser (a context of its own: own storage) logged in as a user;
    every page must end without page errors or CSP violations."""
    users: list[WebUser] = []

    def open_as(username: str, label: str, user_agent: str | None = None) -> WebUser:
        context = browser.new_context(
            base_url=server.url, viewport={"width": 1100, "height": 760}, user_agent=user_agent
        )
        user = WebUser(context.new_page(), label)
        user.log_in(username)
        users.append(user)
        return user

    yield open_as
    close_all(users)


def _account(server: ServerProcess, display_name: str) -> str:
    username = _unique(display_name.split()[0].lower())
    body = {"username": username, "password": PASSWORD, "display_name": display_name}
    rest(server.url, "POST", "/auth/signup", body=body)
    return username


def _login(server: ServerProcess, username: str, password: str) -> dict:
    return rest(
        server.url, "POST", "/auth/login", body={"username": username, "password": password}
    )


def test_profile_with_avatar_preview_and_bio(
    server: ServerProcess, device: Callable[..., WebUser]
) -> None:
    username = _account(server, "Ivy Irons")
    ivy = device(username, "ivy")
    ivy.page.get_by_role("button", name="Profile").click()
    profile = ivy.dialog("Profile")
    expect(profile.get_by_role("img", name="Your avatar")).to_be_hidden()
    profile.get_by_role("textbox", name="Display name").fill("Ivy I. Irons")
    profile.get_by_role("textbox", name="Bio").fill("Tea, trains and type systems.")

    # A wide picture is previewed whole, scaled into the round frame, before saving.
    profile.get_by_label("Avatar", exact=True).set_input_files(
        {"name": "wide.png", "mimeType": "image/png", "buffer": _png(300, 150)}
    )
    preview = profile.get_by_role("img", name="Preview of your new avatar")
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    expect(preview).to_have_js_property("naturalWidth", 300)
    box = preview.bounding_box()
    assert box is not None and round(box["width"]) == round(box["height"]) == 64
    expect(profile.get_by_text("Preview: your new avatar is saved with Save.")).to_be_visible()
    expect(profile.locator(".profile-sample")).to_contain_text("Ivy I. Irons")
    token = _login(server, username, PASSWORD)["access_token"]
    assert rest(server.url, "GET", "/users/me", token)["avatar_media_id"] is None, "not saved yet"
    ivy.shot(SHOTS / "account-profile-preview.png")
    assert_accessible(ivy.page, "profile with avatar preview")

    # A file that is no image is refused before upload.
    profile.get_by_label("Avatar", exact=True).set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    expect(profile.get_by_role("alert")).to_have_text(
        "notes.txt is not a PNG, JPEG, GIF or WebP image."
    )
    profile.get_by_label("Avatar", exact=True).set_input_files(
        {"name": "wide.png", "mimeType": "image/png", "buffer": _png(300, 150)}
    )
    profile.get_by_role("button", name="Save").click()
    expect(profile).to_be_hidden()
    expect(ivy.page.get_by_role("banner")).to_contain_text("Ivy I. Irons")

    me = rest(server.url, "GET", "/users/me", token)
    assert me["display_name"] == "Ivy I. Irons" and me["bio"] == "Tea, trains and type systems."
    assert me["avatar_media_id"] is not None

    # Opened again: the saved avatar (its thumbnail) and bio; Remove avatar removes it.
    ivy.page.get_by_role("button", name="Profile").click()
    expect(profile.get_by_role("textbox", name="Bio")).to_have_value(
        "Tea, trains and type systems."
    )
    saved = profile.get_by_role("img", name="Your avatar")
    expect(saved).to_have_attribute("src", re.compile(r"^blob:"))
    profile.get_by_role("button", name="Remove avatar").click()
    expect(saved).to_be_hidden()
    expect(profile.get_by_text("Your avatar is removed with Save.")).to_be_visible()
    profile.get_by_role("button", name="Save").click()
    expect(profile).to_be_hidden()
    assert rest(server.url, "GET", "/users/me", token)["avatar_media_id"] is None


def test_sessions_list_and_revoke_signs_the_other_browser_out(
    server: ServerProcess, device: Callable[..., WebUser]
) -> None:
    username = _account(server, "Jo Jones")  # its signup is a session too (Python)
    desk = device(username, "desk")
    laptop = device(username, "laptop", user_agent=LAPTOP_AGENT)
    desk.page.get_by_role("button", name="Profile").click()
    sessions = desk.dialog("Profile").get_by_role("region", name="Sessions")
    items = sessions.get_by_role("list", name="Your sessions").get_by_role("listitem")
    expect(items).to_have_count(3)
    this_device = items.filter(has_text="This device")
    expect(this_device).to_have_count(1)
    expect(this_device).to_contain_text("Chrome on Linux")
    expect(this_device.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(items.first).to_contain_text("This device")
    expect(items.filter(has_text="Python")).to_contain_text(re.compile(r"last used \S"))
    other = items.filter(has_text="Firefox on Windows")
    desk.shot(SHOTS / "account-sessions.png")
    assert_accessible(desk.page, "sessions")

    other.get_by_role("button", name="Revoke").click()
    expect(desk.page.get_by_text("Sign out Firefox on Windows")).to_be_visible()
    desk.confirm()
    expect(other).to_have_count(0)
    expect(sessions.get_by_text("Firefox on Windows was signed out.")).to_be_visible()
    # The laptop is signed out at once, with the sign-in form, not "Reconnecting…".
    expect(laptop.page.get_by_role("button", name="Log in", exact=True)).to_be_visible(
        timeout=SIGNED_OUT_WITHIN_MS
    )
    expect(laptop.alert("Your session has ended")).to_be_visible()
    expect(laptop.page.get_by_role("status")).to_have_text("")
    laptop.shot(SHOTS / "account-revoked-elsewhere.png")
    # The desk stays signed in.
    expect(desk.page.get_by_role("status")).to_have_text("Connected")


def test_password_change_keeps_this_session_and_ends_the_others(
    server: ServerProcess, device: Callable[..., WebUser]
) -> None:
    username = _account(server, "Kim Kent")
    desk = device(username, "desk")
    laptop = device(username, "laptop", user_agent=LAPTOP_AGENT)
    desk.page.get_by_role("button", name="Profile").click()
    password = desk.dialog("Profile").get_by_role("region", name="Password")
    current = password.get_by_label("Current password")
    new = password.get_by_label("New password", exact=True)
    repeat = password.get_by_label("Repeat new password")

    # A wrong current password is said so, and nobody is signed out.
    current.fill("not my password")
    new.fill("a much better passphrase")
    repeat.fill("a much better passphrase")
    password.get_by_role("button", name="Change password").click()
    expect(password.get_by_role("alert")).to_have_text("Current password: wrong password")
    expect(current).to_be_focused()
    expect(current).to_have_attribute("aria-invalid", "true")
    desk.shot(SHOTS / "account-password-wrong.png")
    assert_accessible(desk.page, "password error")
    expect(desk.page.get_by_role("status")).to_have_text("Connected")
    expect(laptop.page.get_by_role("status")).to_have_text("Connected")

    # Two different new passwords never reach the server.
    current.fill(PASSWORD)
    repeat.fill("a much better passphrasE")
    password.get_by_role("button", name="Change password").click()
    expect(password.get_by_role("alert")).to_have_text(
        "Repeat new password: not the same as the new password"
    )

    repeat.fill("a much better passphrase")
    password.get_by_role("button", name="Change password").click()
    expect(
        password.get_by_text("Password changed. Your other sessions were signed out.")
    ).to_be_visible()
    expect(current).to_have_value("")
    expect(laptop.page.get_by_role("button", name="Log in", exact=True)).to_be_visible(
        timeout=SIGNED_OUT_WITHIN_MS
    )
    # This session stays: after a reload too (its refresh token still works).
    sessions = desk.dialog("Profile").get_by_role("list", name="Your sessions")
    expect(sessions.get_by_role("listitem")).to_have_count(1)
    desk.page.reload()
    desk.expect_signed_in()
    assert _login(server, username, "a much better passphrase")["user"]["username"] == username
    with pytest.raises(AssertionError, match="401"):
        _login(server, username, PASSWORD)
