"""Browser tests of Room settings (chat_server/web/roomsettings.js): two users live
in Debian's chromium against a real `python run.py`. Inviting by username (with
suggestions), roles, rename and topic, and kicks, each seen at once by the other
user. Controls are found by role and accessible name (API.md "Built-in web
client"). Screenshots go to tests/helpers/browser.SHOTS.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from ..helpers import PASSWORD
from ..helpers.browser import WebUser, assert_accessible, close_all, new_user, rest, shots_dir
from ..helpers.servers import ServerProcess

pytestmark = pytest.mark.e2e

SHOTS = shots_dir("rooms")


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


@pytest.fixture
def person(browser: Browser, server: ServerProcess) -> Iterator[Callable[[str], WebUser]]:
    """Signs up an account over REST and logs it in on a page of its own; every
    page must end without page errors or CSP violations."""
    users: list[WebUser] = []

    def make(display_name: str) -> WebUser:
        username = _unique(display_name.split()[0].lower())
        body = {"username": username, "password": PASSWORD, "display_name": display_name}
        rest(server.url, "POST", "/auth/signup", body=body)
        user = new_user(browser, server.url, username)
        user.log_in(username)
        users.append(user)
        return user

    yield make
    close_all(users)


def test_invite_roles_rename_and_kick_live(person: Callable[[str], WebUser]) -> None:
    ann, ben = person("Ann Archer"), person("Ben Baker")
    room = _unique("plans")
    ann.create_room(room, private=True)
    ann.page.get_by_role("button", name="Room settings").click()
    settings = ann.dialog("Room settings")
    members = settings.get_by_role("list", name="Members")
    expect(members.get_by_role("listitem")).to_have_count(1)
    expect(members).to_contain_text("owner")
    expect(settings.get_by_role("heading", name="Members (1)")).to_be_visible()

    # A username nobody has is refused in words.
    field = settings.get_by_role("textbox", name="Username")
    field.fill("nobody_here")
    settings.get_by_role("button", name="Invite", exact=True).click()
    expect(settings.get_by_role("alert")).to_have_text("There is no user named “nobody_here”.")

    # Typing part of Ben's name suggests him; Enter takes the suggestion.
    field.fill("")
    field.press_sequentially(ben.label[:5])
    suggestion = settings.get_by_role("option", name=re.compile("Ben Baker"))
    expect(suggestion).to_be_visible()
    expect(suggestion).to_have_attribute("aria-selected", "true")
    ann.shot(SHOTS / "room-settings-suggestions.png")
    assert_accessible(ann.page, "room settings: invite suggestions")
    field.press("Enter")
    expect(field).to_have_value(ben.label)
    expect(settings.get_by_role("listbox", name="Suggested users")).to_be_hidden()
    settings.get_by_role("button", name="Invite", exact=True).click()
    expect(settings.get_by_text("Ben Baker was added to the room.")).to_be_visible()
    ben_entry = members.get_by_role("listitem").filter(has_text="Ben Baker")
    expect(ben_entry).to_be_visible()
    # Ben is online: his presence dot says so.
    expect(ben_entry.get_by_role("img", name="Online")).to_be_visible()

    # The room appears in Ben's list at once, and the two chat in it.
    ben.open_room(room)
    ben.send("thanks for the invite")
    expect(ann.articles("thanks for the invite")).to_be_visible()

    # Ben, a plain member, sees the members and Leave but no moderation...
    ben.page.get_by_role("button", name="Room settings").click()
    ben_settings = ben.dialog("Room settings")
    expect(ben_settings.get_by_role("button", name="Leave")).to_be_visible()
    expect(ben_settings.get_by_role("textbox", name="Room name")).to_have_count(0)
    expect(ben_settings.get_by_role("button", name="Kick")).to_have_count(0)
    # ... until Ann makes him an admin: his open dialog gains the controls.
    ben_entry.get_by_role("button", name="Make admin").click()
    expect(settings.get_by_text("Ben Baker is now an admin.")).to_be_visible()
    expect(ben_entry).to_contain_text("admin")
    expect(ben_entry.get_by_role("button", name="Make member")).to_be_visible()
    expect(ben_settings.get_by_role("textbox", name="Room name")).to_have_value(room)
    expect(ben_settings.get_by_role("button", name="Invite", exact=True)).to_be_visible()
    ann_entry = ben_settings.get_by_role("list", name="Members").get_by_role("listitem")
    ann_entry = ann_entry.filter(has_text="Ann Archer")
    expect(ann_entry).to_contain_text("owner")
    expect(ann_entry.get_by_role("button")).to_have_count(0)  # nobody moderates the owner
    ben.shot(SHOTS / "room-settings-admin.png")
    assert_accessible(ben.page, "room settings (room admin)")
    ben.page.keyboard.press("Escape")
    expect(ben_settings).to_be_hidden()

    # Ann renames the room and sets a topic: Ben's header follows live.
    renamed = _unique("roadmap")
    settings.get_by_role("textbox", name="Room name").fill(renamed)
    settings.get_by_role("textbox", name="Topic").fill("Q3 planning, Thursdays")
    settings.get_by_role("button", name="Save").click()
    expect(settings.get_by_text("Saved.")).to_be_visible()
    expect(ben.page.get_by_role("heading", name=renamed, exact=True)).to_be_visible()
    expect(ben.page.locator("#room-topic")).to_have_text("Q3 planning, Thursdays")
    expect(ben.room_button(renamed)).to_be_visible()
    ben.shot(SHOTS / "room-header-topic.png")
    expect(ann.page.get_by_role("heading", name=renamed, exact=True)).to_be_visible()
    ann.shot(SHOTS / "room-settings-owner.png")
    assert_accessible(ann.page, "room settings (owner)")

    # Ann makes Ben a member again and removes him: his client drops the room
    # and says why; her member list loses him.
    ben_entry.get_by_role("button", name="Make member").click()
    expect(ben_entry.get_by_role("button", name="Make admin")).to_be_visible()
    ben_entry.get_by_role("button", name="Kick").click()
    ann.confirm()
    expect(ben_entry).to_have_count(0)
    expect(settings.get_by_text("Ben Baker was removed from the room.")).to_be_visible()
    expect(ben.room_button(renamed)).to_have_count(0)
    expect(ben.alert(f"You were removed from {renamed}.")).to_be_visible()
    expect(ben.page.get_by_role("heading", name=renamed, exact=True)).to_be_hidden()
    ben.shot(SHOTS / "room-kicked.png")
    assert_accessible(ben.page, "removed from a room")


def test_an_admin_promotes_and_the_promoted_member_leaves(
    person: Callable[[str], WebUser],
) -> None:
    cat, dan, eve = person("Cat Cole"), person("Dan Dale"), person("Eve East")
    room = _unique("club")
    cat.create_room(room)
    for user in (dan, eve):
        user.page.get_by_role("button", name="Browse rooms").click()
        listed = user.dialog("Public rooms").get_by_role("listitem").filter(has_text=room)
        listed.get_by_role("button", name="Join").click()
        expect(user.page.get_by_role("heading", name=room, exact=True)).to_be_visible()

    cat.page.get_by_role("button", name="Room settings").click()
    members = cat.dialog("Room settings").get_by_role("list", name="Members")
    dan_entry = members.get_by_role("listitem").filter(has_text="Dan Dale")
    dan_entry.get_by_role("button", name="Make admin").click()
    expect(dan_entry).to_contain_text("admin")

    # Dan, an admin now, may make Eve an admin but not demote her afterwards.
    dan.page.get_by_role("button", name="Room settings").click()
    dan_members = dan.dialog("Room settings").get_by_role("list", name="Members")
    eve_entry = dan_members.get_by_role("listitem").filter(has_text="Eve East")
    eve_entry.get_by_role("button", name="Make admin").click()
    expect(eve_entry).to_contain_text("admin")
    expect(eve_entry.get_by_role("button", name="Make member")).to_have_count(0)
    expect(eve_entry.get_by_role("button", name="Kick")).to_have_count(0)
    # The owner's list follows each change live.
    expect(members.get_by_role("listitem").filter(has_text="Eve East")).to_contain_text("admin")

    # Dan steps down and then leaves: gone from his list and from Cat's members.
    dan_self = dan_members.get_by_role("listitem").filter(has_text="Dan Dale")
    dan_self.get_by_role("button", name="Make member").click()
    expect(dan.page.get_by_text("Give up your admin role?")).to_be_visible()
    dan.confirm()
    expect(dan_self.get_by_role("button", name="Make member")).to_have_count(0)
    expect(dan.dialog("Room settings").get_by_role("textbox", name="Room name")).to_have_count(0)
    dan.dialog("Room settings").get_by_role("button", name="Leave").click()
    dan.confirm()
    expect(dan.room_button(room)).to_have_count(0)
    expect(members.get_by_role("listitem").filter(has_text="Dan Dale")).to_have_count(0)


def test_presence_is_unknown_while_reconnecting(browser: Browser, tmp_path: Path) -> None:
    """Member dots say "Presence unknown" while the WebSocket is down (the server
    restarting), not a stale "Online", and come back when it reconnects."""
    server = ServerProcess({"CHAT_DATA_DIR": str(tmp_path / "data")}, tmp_path).start()
    try:
        body = {"username": "fay", "password": PASSWORD, "display_name": "Fay Fox"}
        rest(server.url, "POST", "/auth/signup", body=body)
        body = {"username": "gil", "password": PASSWORD, "display_name": "Gil Gray"}
        gil_token = rest(server.url, "POST", "/auth/signup", body=body)["access_token"]
        fay = new_user(browser, server.url, "fay")
        fay.log_in("fay")
        name = _unique("pair")
        fay.create_room(name)
        room_id = next(
            room["id"]
            for room in rest(server.url, "GET", "/rooms/public", gil_token)["items"]
            if room["name"] == name
        )
        rest(server.url, "POST", f"/rooms/{room_id}/join", gil_token)
        fay.page.get_by_role("button", name="Room settings").click()
        settings = fay.dialog("Room settings")
        gil_item = settings.get_by_role("listitem").filter(has_text="Gil Gray")
        expect(gil_item.get_by_role("img", name="Offline")).to_be_visible()
        server.stop()
        expect(fay.page.get_by_role("status")).to_have_text("Reconnecting…")
        # Gil's presence is not known while down; Fay knows her own (offline).
        expect(gil_item.get_by_role("img", name="Presence unknown")).to_be_visible()
        fay.shot(SHOTS / "room-settings-reconnecting.png")
        server.start()
        expect(fay.page.get_by_role("status")).to_have_text("Connected", timeout=30_000)
        expect(settings.get_by_role("img", name="Online")).to_be_visible()
        fay.page.context.close()
        fay.assert_no_problems()
    finally:
        server.stop()
