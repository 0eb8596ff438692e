"""Presence (presence.py): who is online here and on other processes.

Each change returns whether it is visible: a user online on several
processes is online once, and offline only when the last one lets go.
"""

from __future__ import annotations

import time

from chat_server.realtime.presence import Presence

ALICE, BOB, CAROL = 1, 2, 3


def test_local_online_and_offline_are_visible_once() -> None:
    presence = Presence()
    assert presence.local_online(ALICE) is True
    assert presence.local_online(ALICE) is False  # a second socket changes nothing
    assert presence.online_anywhere(ALICE)
    assert not presence.online_anywhere(BOB)
    assert presence.local_offline(ALICE) is True
    assert not presence.online_anywhere(ALICE)


def test_remote_online_then_offline() -> None:
    presence = Presence()
    assert presence.remote_change("node-a", ALICE, "online", [10]) is True
    assert presence.online_anywhere(ALICE)
    assert presence.remote_change("node-a", ALICE, "online", [10, 11]) is False
    assert presence.remote_change("node-a", ALICE, "offline", [10, 11]) is True
    assert not presence.online_anywhere(ALICE)


def test_offline_for_someone_never_online_is_not_visible() -> None:
    presence = Presence()
    assert presence.remote_change("node-a", ALICE, "offline", [10]) is False


def test_a_user_on_two_processes_is_offline_only_when_both_let_go() -> None:
    presence = Presence()
    assert presence.remote_change("node-a", ALICE, "online", [10]) is True
    assert presence.remote_change("node-b", ALICE, "online", [10]) is False
    assert presence.local_online(ALICE) is False
    assert presence.remote_change("node-a", ALICE, "offline", [10]) is False
    assert presence.local_offline(ALICE) is False  # still on node-b
    assert presence.online_anywhere(ALICE)
    assert presence.remote_change("node-b", ALICE, "offline", [10]) is True
    assert not presence.online_anywhere(ALICE)


def test_local_and_remote_together() -> None:
    presence = Presence()
    assert presence.local_online(ALICE) is True
    assert presence.remote_change("node-a", ALICE, "online", [10]) is False
    assert presence.remote_change("node-a", ALICE, "offline", [10]) is False  # still here
    assert presence.local_offline(ALICE) is True


def test_alive_reports_only_users_newly_online() -> None:
    presence = Presence()
    presence.local_online(ALICE)
    presence.remote_change("node-b", BOB, "online", [20])
    appeared, vanished = presence.remote_alive(
        "node-a", {ALICE: [10], BOB: [20], CAROL: [30, 31]}, time.time()
    )
    assert appeared == [(CAROL, [30, 31])]
    assert vanished == []
    assert presence.online_anywhere(CAROL)
    # The same list again changes nothing.
    assert presence.remote_alive("node-a", {CAROL: [30, 31]}, time.time()) == ([], [])


def test_alive_reports_users_whose_offline_was_missed() -> None:
    """An `alive` is the process's full list: whoever dropped off it is offline
    (its `offline` was published while this process was not listening)."""
    presence = Presence()
    presence.remote_alive("node-a", {ALICE: [10], BOB: [20], CAROL: [30]}, time.time())
    presence.remote_change("node-b", CAROL, "online", [30])
    appeared, vanished = presence.remote_alive("node-a", {ALICE: [10]}, time.time())
    assert appeared == []
    assert vanished == [(BOB, [20])]  # Carol is still online on node-b
    assert not presence.online_anywhere(BOB)
    assert presence.online_anywhere(CAROL)


def test_silent_processes_expire_with_their_users() -> None:
    presence = Presence()
    presence.remote_alive("node-a", {ALICE: [10], BOB: [20]}, 1000.0)
    presence.remote_alive("node-b", {BOB: [20, 21]}, 1020.0)
    presence.local_online(CAROL)
    assert presence.expire(silent_since=990.0) == []  # both heard from since
    assert presence.expire(silent_since=1010.0) == [(ALICE, [10])]  # Bob lives on node-b
    assert not presence.online_anywhere(ALICE)
    assert presence.online_anywhere(BOB)
    assert presence.expire(silent_since=1030.0) == [(BOB, [20, 21])]
    assert presence.online_anywhere(CAROL)  # local users never expire
    assert presence.remote == {} and presence.heard_from == {}


def test_any_message_from_a_process_keeps_it_alive() -> None:
    presence = Presence()
    presence.remote_alive("node-a", {ALICE: [10]}, 1000.0)
    presence.remote_change("node-a", BOB, "online", [20])  # heard from now
    assert presence.expire(silent_since=time.time() - 60) == []
    assert presence.online_anywhere(ALICE) and presence.online_anywhere(BOB)


def test_a_user_back_after_expiry_is_online_again() -> None:
    presence = Presence()
    presence.remote_alive("node-a", {ALICE: [10]}, 1000.0)
    assert presence.expire(silent_since=2000.0) == [(ALICE, [10])]
    appeared, _ = presence.remote_alive("node-a", {ALICE: [10]}, 2001.0)
    assert appeared == [(ALICE, [10])]


def test_remote_users_in_rooms() -> None:
    presence = Presence()
    presence.remote_change("node-a", ALICE, "online", [10, 11])
    presence.remote_change("node-b", BOB, "online", [11])
    presence.remote_change("node-b", CAROL, "online", [12])
    presence.local_online(99)  # local users are the hub's to list
    assert presence.remote_users_in([10]) == {ALICE}
    assert presence.remote_users_in([11]) == {ALICE, BOB}
    assert presence.remote_users_in(iter([10, 12])) == {ALICE, CAROL}
    assert presence.remote_users_in([]) == set()
    presence.remote_change("node-a", ALICE, "offline", [10, 11])
    assert presence.remote_users_in([10, 11]) == {BOB}
