"""OpenAPI fuzzing: schemathesis over /api/v1/openapi.json against real servers.

Each engine gets a `python run.py` subprocess seeded so that ids 1 exist (a
user, a public room, a message). Every documented operation except the
WebSocket upgrade is called with generated input (positive and negative, the
coverage phase's edge cases included) and an access token, then the stateful
phase follows the document's links (signup -> room -> message -> edit, delete,
read; upload -> download). Every response must pass every schemathesis check:
no 5xx, a documented status, content type, headers and body, schema-valid
input accepted and invalid input refused, auth enforced, created resources
readable and deleted ones gone.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ..helpers import PASSWORD
from ..helpers.servers import REPO, ServerProcess, engine_env

pytestmark = pytest.mark.e2e

# Generated cases per operation and phase, and stateful scenarios of up to STEPS
# calls; together they keep the file within a few minutes on 2 cores. Each link
# added to the document spreads the walks thinner: enough scenarios that some go
# from a created room on to a sent message (asserted below).
MAX_EXAMPLES = 25
SCENARIOS = 90
STEPS = 10
# Operations that end or change sessions get a fresh session of a second user,
# so the shared token stays valid (and deleting user 1's sessions is an IDOR probe).
SESSION_KILLERS = {
    ("POST", "/api/v1/auth/logout"),
    ("DELETE", "/api/v1/auth/sessions/{session_id}"),
    ("POST", "/api/v1/auth/password"),
}
# Deleting a room as user 1 would delete the seeded rooms the other operations use:
# it runs as user 2, who owns none of them (403).
SEED_KILLERS = {("DELETE", "/api/v1/rooms/{room_id}")}
SIGN_INS = {
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
}
SEND = ("POST", "/api/v1/rooms/{room_id}/messages")
# 400s that schema-valid input can still get, because only the server's data can
# tell: a cursor this endpoint did not issue, and ids that must name something of
# the caller's (an image it uploaded, another user, a message of the same room,
# media it uploaded), and a push subscription's endpoint and keys. Each is documented
# on its operation.
DATA_DEPENDENT_FIELDS = {
    ("PATCH", "/api/v1/users/me"): {"avatar_media_id"},
    ("POST", "/api/v1/dm"): {"user_id"},
    SEND: {"reply_to", "attachments"},
    # Where the endpoint's host resolves, and whether the keys are a point on P-256.
    ("POST", "/api/v1/push/subscriptions"): {"endpoint", "keys"},
    # An outgoing hook's url must resolve to public addresses (DNS decides), and
    # url/trigger belong to outgoing hooks only, url required there (documented;
    # not expressible for generators without a oneOf body).
    ("POST", "/api/v1/rooms/{room_id}/webhooks"): {"url", "trigger"},
    # `text` or `body`: one of the two (documented).
    ("POST", "/api/v1/hooks/{secret}"): {"body"},
}


def _is_whole_float(value: Any) -> bool:
    if isinstance(value, list):
        return any(_is_whole_float(item) for item in value)
    return isinstance(value, float) and value.is_integer()


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def _refused_for_data_not_shape(response: Any, case: Any) -> bool:
    """Whether a refusal of schema-valid input depends on stored data, not on its shape."""
    key = (case.operation.method.upper(), case.operation.path)
    if response.status_code == 416:  # a Range beyond the stored file's length
        return key == ("GET", "/api/v1/media/{media_id}") and "Range" in (case.headers or {})
    if response.status_code != 400:
        return False
    body = case.body if isinstance(case.body, dict) else {}
    if key == ("POST", "/api/v1/media") and any(map(_has_control, body)):
        return True  # a part name with a control character makes an invalid HTTP header
    try:
        fields = set(response.json()["error"]["details"]["fields"])
    except (ValueError, KeyError, TypeError):
        return False
    allowed = {"cursor"} | DATA_DEPENDENT_FIELDS.get(key, set())
    if key == SEND and "body" not in body:
        allowed.add("body")  # "body or attachments": documented, not expressible for generators
    # Whole-number floats (`1.0`) in integer fields are valid JSON Schema integers; the
    # server refuses them until its validator accepts them. Excused only for such fields.
    allowed |= {name for name in fields if _is_whole_float(body.get(name))}
    return bool(fields) and fields <= allowed


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's positive_data_acceptance, minus refusals only stored data explains."""
    if _refused_for_data_not_shape(response, case):
        return None
    return positive_data_acceptance(ctx, response, case)


load_all_checks()
CHECKS = [
    positive_data_accepted if check is positive_data_acceptance else check
    for check in REGISTERED_CHECKS.get_all()
]


@dataclass
class Target:
    engine: str
    server: ServerProcess
    token: str
    calls: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    linked: Counter = field(default_factory=Counter)

    def login(self, username: str) -> str:
        response = requests.post(
            self.server.url + "/api/v1/auth/login",
            json={"username": username, "password": PASSWORD},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def token_for(self, key: tuple[str, str], token: str) -> str:
        """A fresh session of user 2 for the shared token's session and seed killers."""
        killer = key in SESSION_KILLERS or key in SEED_KILLERS
        return self.login("other") if killer and token == self.token else token


def _seed(url: str) -> str:
    """User 1 (fuzzer), user 2 (other), public room 1 with message 1, private room 2, DM 3."""
    tokens = []
    for name in ("fuzzer", "other"):
        response = requests.post(
            url + "/api/v1/auth/signup",
            json={"username": name, "password": PASSWORD},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        tokens.append(response.json()["access_token"])
    auth = {"Authorization": f"Bearer {tokens[0]}"}
    for kind in ("public", "private"):
        response = requests.post(
            url + "/api/v1/rooms", json={"name": kind, "kind": kind}, headers=auth, timeout=10
        )
        assert response.status_code == 201, response.text
    response = requests.post(
        url + "/api/v1/rooms/1/messages", json={"body": "hello"}, headers=auth, timeout=10
    )
    assert response.status_code == 201, response.text
    response = requests.post(url + "/api/v1/dm", json={"user_id": 2}, headers=auth, timeout=10)
    assert response.status_code == 201, response.text  # room 3
    return tokens[0]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Target]:
    workdir: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with engine_env(request.param, request, workdir / "data") as env:
        server = ServerProcess(env, workdir).start()
        try:
            yield Target(request.param, server, _seed(server.url))
        finally:
            server.stop()


@pytest.fixture
def api_schema(target: Target):
    loaded = schemathesis.openapi.from_url(target.server.url + "/api/v1/openapi.json")
    # The shared token as configured auth: schemathesis then knows requests carry it.
    loaded.config.update(
        base_url=target.server.url, headers={"Authorization": f"Bearer {target.token}"}
    )
    loaded.config.generation.update(max_examples=MAX_EXAMPLES)
    return loaded


# The WebSocket upgrade (x-websocket) is fuzzed frame by frame in test_fuzz_ws.py.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/api/v1/ws")


@pytest.fixture(autouse=True)
def _pytest9_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's pytest plugin reads `node._nodeid`, which pytest 9 no longer sets."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)
def test_every_operation_conforms_and_never_5xx(case, target: Target) -> None:
    key = (case.operation.method.upper(), case.operation.path)
    token = target.token_for(key, target.token)
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30
    )
    target.calls[key] += 1
    target.statuses[response.status_code] += 1


def test_every_operation_was_fuzzed(target: Target) -> None:
    """The run above reached every documented operation, not just a few."""
    paths = requests.get(target.server.url + "/api/v1/openapi.json", timeout=10).json()["paths"]
    documented = {
        (method.upper(), path)
        for path, item in paths.items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"} and path != "/api/v1/ws"
    }
    # schemathesis 4.32 generates no case for the parameterless document route itself;
    # test_document_is_served covers it.
    missing = documented - set(target.calls) - {("GET", "/api/v1/openapi.json")}
    assert not missing, f"never called: {sorted(missing)}"
    assert all(n >= 5 for n in target.calls.values()), target.calls
    assert not [s for s in target.statuses if s >= 500], target.statuses
    # A handler that blew up is a bug even if the client saw a clean error.
    failures = [line for line in target.server.logs().splitlines() if "unhandled error" in line]
    assert not failures, "server logged unhandled errors:\n" + "\n".join(failures[:20])
    # The shared token survived the whole run (session killers used their own).
    me = requests.get(
        target.server.url + "/api/v1/users/me",
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=10,
    )
    assert me.status_code == 200, me.text
    summary = {
        "engine": target.engine,
        "operations": len(target.calls),
        "requests": sum(target.calls.values()),
        "statuses": dict(sorted(target.statuses.items())),
    }
    print(json.dumps(summary))


def _linked_operations(document: dict[str, Any]) -> list[str]:
    """Operations a link leads from or to: the flows (the rest is fuzzed above)."""
    ids = set()
    for item in document["paths"].values():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    ids |= {operation["operationId"], link["operationId"]}
    return sorted(ids)


def test_linked_flows_conform(target: Target, api_schema) -> None:
    """The stateful phase: scenarios of calls chained along the document's links.

    A scenario acts as user 1 until it signs someone in (a signup link creates a
    room with the new account's token); from then on it acts as that account.
    """
    # Invalid input was sent to every operation above; scenarios send valid input so
    # that each step succeeds often enough for the next link to have something to use.
    api_schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
    # Only the document's own links: the flows a client follows, not guessed ones.
    api_schema.config.phases.stateful.inference.algorithms = []

    flows = api_schema.include(operation_id=_linked_operations(api_schema.raw_schema))

    class Flows(flows.as_state_machine()):
        def setup(self) -> None:
            self.token = target.token

        def get_call_kwargs(self, case) -> dict[str, Any]:
            token = target.token_for((case.method.upper(), case.operation.path), self.token)
            return {"headers": {"Authorization": f"Bearer {token}"}, "timeout": 30}

        def after_call(self, response, case) -> None:
            super().after_call(response, case)
            key = (case.method.upper(), case.operation.path)
            target.linked[key, response.status_code // 100] += 1
            if key in SIGN_INS and response.status_code in (200, 201):
                self.token = response.json()["access_token"]

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            case.validate_response(
                response, checks=CHECKS, transport_kwargs=kwargs, recorder=self.recorder
            )

    completed = Counter()

    class Counted(Flows):
        def teardown(self) -> None:
            completed["scenarios"] += 1

    # Generation may meet a server that moved on since an earlier scenario with the same
    # start (a username taken by then, say); Hypothesis calls that flaky. Like the
    # schemathesis runner, go on with a new suite under the next seed.
    for suite in range(5):
        remaining = SCENARIOS - completed["scenarios"]
        if remaining <= 0:
            break
        try:
            hypothesis.seed(suite)(Counted).run(
                settings=hypothesis.settings(
                    max_examples=remaining,
                    stateful_step_count=STEPS,
                    # No shrinking: a replay against a server whose state moved on
                    # cannot reproduce a scenario; a failure is reported as found.
                    phases=[hypothesis.Phase.generate],
                    deadline=None,
                    suppress_health_check=list(hypothesis.HealthCheck),
                    database=None,
                )
            )
        except hypothesis.errors.FlakyStrategyDefinition:
            continue
    assert completed["scenarios"] >= SCENARIOS // 2, completed
    # The links took the scenarios past creation into the flows they describe.
    for key in [("POST", "/api/v1/rooms"), SEND, ("POST", "/api/v1/media")]:
        assert target.linked[key, 2], (key, sorted(target.linked.items()))
    # ...and on from a sent message and an upload: which of the next links a walk
    # takes, and whether it still acts as the sender, is up to the generator.
    followed = [
        ("PATCH", "/api/v1/rooms/{room_id}/messages/{message_id}"),
        ("DELETE", "/api/v1/rooms/{room_id}/messages/{message_id}"),
        ("POST", "/api/v1/rooms/{room_id}/read"),
        ("GET", "/api/v1/media/{media_id}"),
    ]
    assert any(target.linked[key, 2] for key in followed), sorted(target.linked.items())
    print(json.dumps({"engine": target.engine, "stateful_calls": sum(target.linked.values())}))


def test_document_is_served(target: Target) -> None:
    response = requests.get(target.server.url + "/api/v1/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    on_disk = json.loads((REPO / "chat_server" / "openapi.json").read_text())
    assert served == on_disk
    assert served["openapi"].startswith("3.1")


# --- regressions for what the fuzzers found ---------------------------------------------

ID_ROUTES = [
    ("GET", "/api/v1/users/{}"),
    ("GET", "/api/v1/rooms/{}"),
    ("GET", "/api/v1/rooms/{}/messages"),
    ("DELETE", "/api/v1/rooms/1/messages/{}"),
    ("DELETE", "/api/v1/auth/sessions/{}"),
    ("GET", "/api/v1/media/{}"),
]


@pytest.mark.parametrize("digits", ["\u00b2", "\u0661", "\uff11", "1\u00b9"])
def test_unicode_digits_in_path_ids_are_404(target: Target, digits: str) -> None:
    """`str.isdigit()` accepts "²" and "١"; `int()` then fails or reads another id."""
    for method, route in ID_ROUTES:
        response = requests.request(
            method,
            target.server.url + route.format(digits),
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=10,
        )
        assert response.status_code == 404, (method, route, digits, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_multipart_part_header_with_a_control_character_is_400(target: Target) -> None:
    boundary = "fuzzboundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="\x0c\u00bf"\r\n\r\n'
        f"[]\r\n--{boundary}--\r\n"
    ).encode()
    response = requests.post(
        target.server.url + "/api/v1/media",
        data=body,
        headers={
            "Authorization": f"Bearer {target.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/api/v1/rooms/public", "GET"),
        ("DELETE", "/api/v1/rooms/public", "GET"),
    ],
)
def test_undocumented_method_beside_an_id_route_is_405(
    target: Target, method: str, path: str, allow: str
) -> None:
    """`/rooms/public` is not room "public": other methods there are 405, not 404."""
    response = requests.request(
        method,
        target.server.url + path,
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=10,
    )
    assert response.status_code == 405, response.text
    assert response.json()["error"]["code"] == "method_not_allowed"
    allowed = set(response.headers["Allow"].replace(" ", "").split(","))
    assert allowed - {"HEAD"} == set(allow.split(",")), allowed


LISTS = ["/api/v1/users", "/api/v1/rooms/public", "/api/v1/rooms/1/members", "/api/v1/search?q=a"]


@pytest.mark.parametrize("path", LISTS)
def test_empty_cursor_is_400(target: Target, path: str) -> None:
    """No page has an empty cursor; it is refused like any other cursor never issued."""
    response = requests.get(
        target.server.url + path,
        params={"cursor": ""},
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["fields"] == {
        "cursor": "not a cursor returned by this endpoint"
    }
