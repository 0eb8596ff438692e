"""Browser tests of the web client's registration and administration (issue 14).

A real `python run.py` in its default `invite` registration mode and Debian's
chromium: the first run through the setup link, an invite link's sign-up, and
the Admin tabs and Room settings as admins and room owners use them. Controls
are found by role and accessible name (API.md "Built-in web client").
Screenshots go to tests/helpers/browser.SHOTS.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, close_all, rest, shots_dir, sign_up_first_admin
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

SHOTS = shots_dir("admin")
SETUP_LINK = re.compile(r"(http://\S+/#setup=([A-Za-z0-9_-]+))")


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def _start(workdir: Path, **settings: str) -> ServerProcess:
    """A server on an empty data dir; registration is the default (`invite`)
    unless `settings` say otherwise."""
    env = {"CHAT_DATA_DIR": str(workdir / "data"), "CHAT_REGISTRATION": None} | settings
    return ServerProcess(env, workdir).start()


def _setup_link(server: ServerProcess) -> re.Match[str]:
    """The banner's setup link, logged once the server listens."""
    deadline = time.monotonic() + 10
    while (found := SETUP_LINK.search(server.logs())) is None:
        assert time.monotonic() < deadline, f"no setup link in the banner:\n{server.logs()}"
        time.sleep(0.05)
    return found


@dataclass
class Site:
    """The module's server with its first admin, made through the setup token."""

    server: ServerProcess
    admin_name: str
    admin_token: str

    @property
    def url(self) -> str:
        return self.server.url

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        return rest(self.url, method, path, token, body)

    def add_user(self, display_name: str) -> tuple[str, str, int]:
        """An account made by the admin (signup needs an invite): (username, token, id)."""
        username = _unique(display_name.split()[0].lower())
        body = {"username": username, "password": PASSWORD, "display_name": display_name}
        user = self.call("POST", "/admin/users", self.admin_token, body)
        login = self.call("POST", "/auth/login", body={"username": username, "password": PASSWORD})
        return username, login["access_token"], user["id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("web-admin")
    server = _start(workdir)
    try:
        yield Site(server, "boss", sign_up_first_admin(server.url, workdir / "data"))
    finally:
        server.stop()


@pytest.fixture
def people(browser: Browser) -> Iterator[Callable[[str, str], WebUser]]:
    """Makes browser users, each in a context of its own (own localStorage)."""
    users: list[WebUser] = []

    def make(label: str, base_url: str) -> WebUser:
        context = browser.new_context(
            base_url=base_url,
            viewport={"width": 1100, "height": 760},
            permissions=["clipboard-read", "clipboard-write"],
        )
        user = WebUser(context.new_page(), label)
        users.append(user)
        return user

    yield make
    close_all(users)


def test_first_run_setup_invite_and_chat(
    tmp_path: Path, people: Callable[[str, str], WebUser]
) -> None:
    server = _start(tmp_path)
    try:
        _first_run(server, tmp_path / "data" / "setup_token", people)
    finally:
        server.stop()


def _first_run(
    server: ServerProcess, token_file: Path, people: Callable[[str, str], WebUser]
) -> None:
    base = server.url
    link = _setup_link(server)
    setup_url, token = link.group(1), link.group(2)
    assert setup_url == f"{base}/#setup={token}"
    assert token_file.read_text().strip() == token
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    info = rest(base, "GET", "/server")
    assert (info["registration"], info["setup_required"]) == ("invite", True)

    # Without a link, the invite-only sign-in screen offers no sign-up.
    guest = people("guest", base)
    guest.page.goto("/")
    expect(guest.page.get_by_role("heading", name=f"Welcome to {info['name']}")).to_be_visible()
    expect(guest.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
    expect(guest.page.get_by_role("button", name="Sign up")).to_be_hidden()
    expect(guest.page.get_by_text("open the invite link you were given")).to_be_visible()
    guest.shot(SHOTS / "signin-invite-only.png")

    # The setup link makes the first admin.
    admin = people("admin", base)
    admin.page.goto(setup_url)
    expect(admin.page.get_by_role("heading", name="Create admin account")).to_be_visible()
    expect(admin.page.get_by_role("button", name="Log in", exact=True)).to_be_hidden()
    admin.fill_sign_up("root", "Ada Admin")
    admin.shot(SHOTS / "setup.png")
    admin.page.get_by_role("button", name="Create admin account").click()
    admin.expect_signed_in()
    expect(admin.page).to_have_url(f"{base}/")  # the spent link is gone from the address
    expect(admin.page.get_by_role("button", name="Admin")).to_be_visible()
    assert rest(base, "GET", "/server")["setup_required"] is False
    late = people("late", base)
    late.page.goto(setup_url)
    expect(late.alert("This setup link was used already")).to_be_visible()
    expect(late.page.get_by_role("button", name="Create admin account")).to_have_count(0)

    # A private room and an invite into it, copied from the page.
    room = _unique("lounge")
    admin.create_room(room, private=True)
    opener = admin.page.get_by_role("button", name="Invite people")
    opener.click()
    dialog = admin.dialog("Invite people")
    expect(dialog.get_by_role("checkbox", name=room)).to_be_checked()
    dialog.get_by_role("button", name="Create invite").click()
    link_box = dialog.get_by_role("textbox", name="Invite link")
    expect(link_box).to_have_value(re.compile(rf"^{re.escape(base)}/#invite=\S+$"))
    invite_url = link_box.input_value()
    dialog.get_by_role("button", name="Copy").click()
    expect(dialog.get_by_text("Copied.")).to_be_visible()
    assert admin.page.evaluate("navigator.clipboard.readText()") == invite_url
    expect(dialog.get_by_role("list", name="Invites")).to_contain_text(invite_url)
    admin.shot(SHOTS / "invite-created.png")
    admin.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()

    # A made-up invite is refused clearly; the real one (pasted into the same
    # tab) shows the server's name and the invite's room.
    guest.page.goto("/#invite=not-a-real-code")
    expect(guest.alert("invite link is not valid")).to_be_visible()
    expect(guest.page.get_by_role("button", name="Sign up")).to_be_hidden()
    guest.shot(SHOTS / "invite-invalid.png")
    guest.page.goto(invite_url)
    expect(guest.page.get_by_role("heading", name=f"Join {info['name']}")).to_be_visible()
    expect(guest.page.get_by_role("list", name="Rooms you are invited to")).to_contain_text(room)
    expect(guest.page.get_by_role("button", name="Log in", exact=True)).to_be_hidden()
    guest.fill_sign_up("gail", "Gail Guest")
    guest.shot(SHOTS / "invite-signup.png")
    guest.page.get_by_role("button", name="Sign up").click()
    guest.expect_signed_in()
    # She lands in the invite's room.
    expect(guest.page.get_by_role("heading", name=room, exact=True)).to_be_visible()
    expect(guest.room_button(room)).to_have_attribute("aria-current", "page")

    guest.send("hello from gail")
    expect(admin.articles("hello from gail")).to_have_count(1)
    expect(admin.articles("hello from gail")).to_contain_text("Gail Guest")
    admin.send("welcome, gail")
    expect(guest.articles("welcome, gail")).to_have_count(1)
    expect(guest.articles("welcome, gail")).to_contain_text("Ada Admin")

    # The Admin tabs, moved through with the arrow keys.
    admin_button = admin.page.get_by_role("button", name="Admin")
    admin_button.click()
    dialog = admin.dialog("Administration")
    users_tab = dialog.get_by_role("tab", name="Users")
    expect(users_tab).to_have_attribute("aria-selected", "true")
    expect(users_tab).to_be_focused()
    users = dialog.get_by_role("tabpanel", name="Users").get_by_role("listitem")
    expect(users.filter(has_text="@gail")).to_contain_text("Gail Guest")
    expect(users.filter(has_text="@root")).to_contain_text("admin")
    admin.shot(SHOTS / "admin-users.png")

    users_tab.press("ArrowRight")
    invites_tab = dialog.get_by_role("tab", name="Invites")
    expect(invites_tab).to_be_focused()
    expect(invites_tab).to_have_attribute("aria-selected", "true")
    expect(dialog.get_by_role("tabpanel", name="Users")).to_be_hidden()
    invite_item = dialog.get_by_role("tabpanel", name="Invites").get_by_role("listitem")
    expect(invite_item.filter(has_text=invite_url)).to_contain_text("1 of 1 uses")
    admin.shot(SHOTS / "admin-invites.png")

    invites_tab.press("ArrowRight")
    reports = dialog.get_by_role("tabpanel", name="Reports")
    expect(reports.get_by_text("No reports here.")).to_be_visible()

    dialog.get_by_role("tab", name="Reports").press("ArrowRight")
    audit = dialog.get_by_role("tabpanel", name="Audit log")
    # Creating the invite is audited, with the admin as its actor.
    expect(audit.get_by_role("row").filter(has_text="Ada Admin").first).to_be_visible()
    admin.shot(SHOTS / "admin-audit-log.png")
    admin.page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(admin_button).to_be_focused()


def test_admin_deactivates_a_signed_in_user(
    site: Site, people: Callable[[str, str], WebUser]
) -> None:
    boss = people("boss", site.url)
    boss.log_in(site.admin_name)
    boss.page.get_by_role("button", name="Admin").click()
    panel = boss.dialog("Administration").get_by_role("tabpanel", name="Users")
    # An account made in the Users tab (how people get in when sign-up is closed).
    dora_name = _unique("dora")
    panel.get_by_text("New account").click()
    panel.get_by_role("textbox", name="Username").fill(dora_name)
    panel.get_by_label("Password").fill(PASSWORD)
    panel.get_by_role("textbox", name="Display name").fill("Dora Doe")
    panel.get_by_role("button", name="Create user").click()
    expect(panel.get_by_text(f"Dora Doe (@{dora_name}) can log in now.")).to_be_visible()

    login = {"username": dora_name, "password": PASSWORD}
    dora_auth = site.call("POST", "/auth/login", body=login)
    dora_token, dora_id = dora_auth["access_token"], dora_auth["user"]["id"]
    new_room = {"name": _unique("hall"), "kind": "public"}
    room = site.call("POST", "/rooms", site.admin_token, new_room)
    site.call("POST", f"/rooms/{room['id']}/join", dora_token)
    dora = people("dora", site.url)
    dora.log_in(dora_name)
    dora.open_room(room["name"])

    panel.get_by_role("searchbox", name="Search users").fill(dora_name)
    expect(panel.get_by_role("listitem")).to_have_count(1)
    entry = panel.get_by_role("listitem").filter(has_text=f"@{dora_name}")

    entry.get_by_role("button", name="Make admin").click()
    boss.confirm()
    expect(entry.get_by_role("button", name="Remove admin")).to_be_visible()
    assert site.call("GET", f"/users/{dora_id}", dora_token)["is_admin"] is True
    entry.get_by_role("button", name="Remove admin").click()
    boss.confirm()
    expect(entry.get_by_role("button", name="Make admin")).to_be_visible()

    entry.get_by_role("button", name="Deactivate").click()
    boss.confirm()
    expect(entry.get_by_role("button", name="Reactivate")).to_be_visible()
    expect(entry).to_contain_text("deactivated")
    # Dora's open page drops to the sign-in screen.
    dora.expect_signed_out()
    expect(dora.alert("Your session has ended.")).to_be_visible()

    entry.get_by_role("button", name="Reactivate").click()
    expect(entry.get_by_role("button", name="Deactivate")).to_be_visible()
    # Reactivation restores the account, not its rooms.
    dora.log_in(dora_name)
    expect(dora.room_button(room["name"])).to_have_count(0)


def test_admin_decides_reports(site: Site, people: Callable[[str, str], WebUser]) -> None:
    erin_name, erin_token, _ = site.add_user("Erin Eyes")
    _, fay_token, fay_id = site.add_user("Fay Flame")
    room = site.call("POST", "/rooms", erin_token, {"name": _unique("market"), "kind": "public"})
    site.call("POST", f"/rooms/{room['id']}/join", fay_token)
    spam, rude = (
        site.call("POST", f"/rooms/{room['id']}/messages", fay_token, {"body": body})
        for body in ("buy cheap watches", "you are all fools")
    )

    boss = people("boss", site.url)
    boss.log_in(site.admin_name)
    admin_button = boss.page.get_by_role("button", name="Admin")
    # Reports made while the admin's page is open badge the Admin button live.
    spam_report = site.call(
        "POST", f"/rooms/{room['id']}/messages/{spam['id']}/report", erin_token, {"reason": "spam"}
    )
    expect(admin_button).to_have_accessible_description("1 open report")
    # Erin reports the other message from the room, with its Report button.
    erin = people("erin", site.url)
    erin.log_in(erin_name)
    erin.open_room(room["name"])
    erin.articles("you are all fools").get_by_role("button", name="Report").click()
    report = erin.dialog("Report message")
    expect(report.get_by_text("you are all fools")).to_be_visible()
    report.get_by_role("combobox", name="Reason").select_option("abuse")
    report.get_by_role("textbox", name="Comment (optional)").fill("insulting everyone")
    report.get_by_role("button", name="Report").click()
    expect(report).to_be_hidden()
    # Reporting it again says so.
    erin.articles("you are all fools").get_by_role("button", name="Report").click()
    report.get_by_role("button", name="Report").click()
    expect(report.get_by_role("alert")).to_contain_text("already")
    report.get_by_role("button", name="Cancel").click()
    erin.assert_no_problems()
    rude_report = next(
        item
        for item in site.call("GET", "/admin/reports?state=open", site.admin_token)["items"]
        if item["message"]["id"] == rude["id"]
    )
    assert (rude_report["reason"], rude_report["comment"]) == ("abuse", "insulting everyone")
    expect(admin_button).to_have_accessible_description("2 open reports")
    expect(admin_button).to_have_accessible_name("Admin")

    admin_button.click()
    dialog = boss.dialog("Administration")
    expect(dialog.get_by_role("tab", name="Reports")).to_have_attribute("aria-selected", "true")
    reports = dialog.get_by_role("tabpanel", name="Reports").get_by_role("listitem")
    expect(reports).to_have_count(2)
    spam_item = reports.filter(has_text="buy cheap watches")
    expect(spam_item).to_contain_text(f"Spam in #{room['name']}")
    expect(spam_item).to_contain_text("Reported by Erin Eyes")
    rude_item = reports.filter(has_text="you are all fools")
    expect(rude_item).to_contain_text("insulting everyone")
    boss.shot(SHOTS / "admin-reports.png")

    spam_item.get_by_role("button", name="Ban sender").click()
    boss.confirm()
    expect(spam_item).to_contain_text(f"Fay Flame is banned from #{room['name']}.")
    bans = site.call("GET", f"/rooms/{room['id']}/bans", site.admin_token)["items"]
    assert [ban["user"]["id"] for ban in bans] == [fay_id]
    spam_item.get_by_role("button", name="Resolve").click()
    expect(spam_item).to_have_count(0)
    expect(admin_button).to_have_accessible_description("1 open report")

    rude_item.get_by_role("button", name="Delete message").click()
    boss.confirm()
    deleted = reports.filter(has_text="This message was deleted.")
    expect(deleted).to_have_count(1)
    deleted.get_by_role("button", name="Dismiss").click()
    expect(reports.filter(has_text="No reports here.")).to_have_count(1)
    expect(admin_button).to_have_accessible_description("")

    resolved = site.call("GET", "/admin/reports?state=resolved", site.admin_token)["items"]
    dismissed = site.call("GET", "/admin/reports?state=dismissed", site.admin_token)["items"]
    assert spam_report["id"] in [report["id"] for report in resolved]
    assert rude_report["id"] in [report["id"] for report in dismissed]
    history = site.call("GET", f"/rooms/{room['id']}/messages", erin_token)["items"]
    assert [message["deleted"] for message in history] == [False, True]


def test_owner_bans_member_from_room_settings(
    site: Site, people: Callable[[str, str], WebUser]
) -> None:
    gus_name, gus_token, _ = site.add_user("Gus Gold")
    hal_name, hal_token, _ = site.add_user("Hal Hill")
    room = site.call("POST", "/rooms", gus_token, {"name": _unique("den"), "kind": "public"})
    site.call("POST", f"/rooms/{room['id']}/join", hal_token)
    name = room["name"]

    hal = people("hal", site.url)
    hal.log_in(hal_name)
    hal.open_room(name)
    # A plain member sees the members and Leave, and no moderation.
    hal.page.get_by_role("button", name="Room settings").click()
    hal_settings = hal.dialog("Room settings")
    expect(hal_settings.get_by_role("list", name="Members")).to_contain_text("Gus Gold")
    expect(hal_settings.get_by_role("button", name="Leave")).to_be_visible()
    expect(hal_settings.get_by_role("button", name="Ban")).to_have_count(0)
    expect(hal_settings.get_by_role("button", name="Delete room")).to_have_count(0)
    hal.page.keyboard.press("Escape")
    expect(hal_settings).to_be_hidden()

    gus = people("gus", site.url)
    gus.log_in(gus_name)
    gus.open_room(name)
    gus.page.get_by_role("button", name="Room settings").click()
    settings = gus.dialog("Room settings")
    members = settings.get_by_role("list", name="Members")
    hal_entry = members.get_by_role("listitem").filter(has_text=f"@{hal_name}")
    expect(hal_entry).to_be_visible()
    gus.shot(SHOTS / "room-settings.png")
    hal_entry.get_by_role("button", name="Ban").click()
    gus.confirm()

    # Hal's room leaves his list live, and he is told why.
    expect(hal.room_button(name)).to_have_count(0)
    expect(hal.alert(f"You were banned from {name}.")).to_be_visible()
    expect(hal.page.get_by_role("heading", name=name, exact=True)).to_be_hidden()
    expect(hal_entry).to_have_count(0)
    banned = settings.get_by_role("list", name="Banned")
    expect(banned).to_contain_text("Hal Hill")

    # A banned user cannot be invited back until the ban is lifted.
    settings.get_by_role("textbox", name="Username").fill(hal_name)
    settings.get_by_role("button", name="Invite", exact=True).click()
    expect(settings.get_by_role("alert").filter(has_text=re.compile(r"\S"))).to_be_visible()
    banned_hal = banned.get_by_role("listitem").filter(has_text="Hal Hill")
    banned_hal.get_by_role("button", name="Unban").click()
    expect(banned).to_contain_text("Nobody is banned.")
    settings.get_by_role("textbox", name="Username").fill(hal_name)
    settings.get_by_role("button", name="Invite", exact=True).click()
    expect(settings.get_by_text("Hal Hill was added to the room.")).to_be_visible()
    expect(hal_entry).to_be_visible()
    expect(hal.room_button(name)).to_be_visible()

    # The owner deletes the room: gone for both, and Hal is told.
    settings.get_by_role("button", name="Delete room").click()
    gus.confirm()
    expect(settings).to_be_hidden()
    expect(gus.room_button(name)).to_have_count(0)
    expect(hal.room_button(name)).to_have_count(0)
    expect(hal.alert(f"{name} was deleted.")).to_be_visible()


def test_closed_server_offers_no_sign_up(
    tmp_path: Path, people: Callable[[str, str], WebUser]
) -> None:
    server = _start(tmp_path, CHAT_REGISTRATION="closed", CHAT_SERVER_NAME="Acme Chat")
    try:
        visitor = people("visitor", server.url)
        visitor.page.goto("/")
        expect(visitor.page.get_by_role("heading", name="Welcome to Acme Chat")).to_be_visible()
        expect(visitor.page.get_by_role("heading", name="Acme Chat", exact=True)).to_be_visible()
        expect(visitor.page).to_have_title("Acme Chat")
        expect(visitor.page.get_by_text("Sign-up is closed.")).to_be_visible()
        expect(visitor.page.get_by_role("button", name="Sign up")).to_be_hidden()
        expect(visitor.page.get_by_role("textbox", name="Display name")).to_be_hidden()
        expect(visitor.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
        visitor.shot(SHOTS / "signin-closed.png")
    finally:
        server.stop()
