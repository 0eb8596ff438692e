"""/users: profiles and search."""

from __future__ import annotations

from .helpers import error_of, signup

ME = "/api/v1/users/me"


async def test_get_and_patch_me(client, alice):
    response = await client.patch(
        ME, json={"display_name": "  Alice A.  ", "bio": "hi there"}, headers=alice.headers
    )
    assert response.status == 200
    user = await response.json()
    assert user["display_name"] == "Alice A." and user["bio"] == "hi there"
    assert user["username"] == "alice"
    again = await (await client.get(ME, headers=alice.headers)).json()
    assert again == user
    unchanged = await (await client.patch(ME, json={}, headers=alice.headers)).json()
    assert unchanged == user


async def test_patch_me_rejects_bad_fields(client, alice):
    bad = await client.patch(
        ME,
        json={"display_name": "   ", "bio": "b" * 1001, "avatar_media_id": "x"},
        headers=alice.headers,
    )
    error = await error_of(bad, 400)
    assert set(error["details"]["fields"]) == {"display_name", "bio", "avatar_media_id"}
    null_name = await client.patch(ME, json={"display_name": None}, headers=alice.headers)
    assert set((await error_of(null_name, 400))["details"]["fields"]) == {"display_name"}
    missing_media = await client.patch(ME, json={"avatar_media_id": 999}, headers=alice.headers)
    assert set((await error_of(missing_media, 400))["details"]["fields"]) == {"avatar_media_id"}
    cleared = await client.patch(ME, json={"avatar_media_id": None}, headers=alice.headers)
    assert (await cleared.json())["avatar_media_id"] is None


async def test_get_user_by_id(client, alice, bob):
    response = await client.get(f"/api/v1/users/{bob.id}", headers=alice.headers)
    assert (await response.json()) == bob.user
    await error_of(await client.get("/api/v1/users/99999", headers=alice.headers), 404)
    await error_of(await client.get("/api/v1/users/0", headers=alice.headers), 404)
    await error_of(await client.get(f"/api/v1/users/{2**64}", headers=alice.headers), 404)
    await error_of(await client.get(f"/api/v1/users/{bob.id}"), 401)


async def test_search_users_by_prefix_with_paging(client, alice):
    for name in ("zed1", "zed2", "zed3"):
        await signup(client, name)
    await signup(client, "other", display_name="Zed Display")
    first = await (await client.get("/api/v1/users?q=ZED&limit=2", headers=alice.headers)).json()
    assert [u["username"] for u in first["items"]] == ["other", "zed1"]
    assert first["next_cursor"]
    second = await client.get(
        f"/api/v1/users?q=zed&limit=2&cursor={first['next_cursor']}", headers=alice.headers
    )
    second = await second.json()
    assert [u["username"] for u in second["items"]] == ["zed2", "zed3"]
    assert second["next_cursor"] is None
    wildcard = await (await client.get("/api/v1/users?q=%25", headers=alice.headers)).json()
    assert wildcard["items"] == []


async def test_search_users_rejects_bad_paging(client, alice):
    for query in ("limit=0", "limit=101", "limit=abc", "limit=1.5", "cursor=!!!"):
        response = await client.get(f"/api/v1/users?{query}", headers=alice.headers)
        error = await error_of(response, 400)
        assert set(error["details"]["fields"]) == {query.split("=")[0]}
