"""Fast routes (libs.runtime.http.FastRoute): which requests they take, and that what
they answer carries what the middleware chain adds — the request id, access metrics,
the error envelope — the same as a routed request."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter
from starlette.types import Scope

from libs.runtime import metrics
from libs.runtime.http import Answer, FastRoute, answer_response, create_app


async def fast(scope: Scope, segment: str) -> Answer:
    body = f"fast {segment}".encode()
    return 200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))], body


async def fast_failing(scope: Scope, segment: str) -> Answer:
    raise _FAILURES[segment]


_FAILURES = {"bug": RuntimeError("a bug"), "down": ConnectionRefusedError("a store is down")}

router = APIRouter()


@router.get("/f/{x}")
async def twin(x: str) -> object:
    body = f"twin {x}".encode()
    return answer_response(
        (200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))], body)
    )


@router.get("/routed-failing/{x}")
async def routed_failing(x: str) -> object:
    raise _FAILURES[x]


def client() -> httpx.AsyncClient:
    app = create_app(
        title="t",
        routers=[router],
        fast_routes=[
            FastRoute("/f/", "/f/{x}", fast),
            FastRoute("/fail/", "/fail/{x}", fast_failing),
        ],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_a_plain_get_of_one_segment_takes_the_fast_path() -> None:
    async with client() as http:
        answer = await http.get("/f/a%20b?q=1")
        assert (answer.status_code, answer.text) == (200, "fast a b")
        assert answer.headers["content-type"] == "text/plain"


async def test_everything_else_goes_through_fastapi() -> None:
    async with client() as http:
        with_body = await http.get("/f/a", headers={"Content-Length": "0"})
        assert with_body.text == "twin a"
        for method in ("HEAD", "POST", "DELETE"):
            wrong = await http.request(method, "/f/a")
            assert wrong.status_code == 405, method
            if method != "HEAD":
                assert wrong.json()["error"]["code"] == "method_not_allowed"
        assert (await http.get("/f/a/b")).json()["error"]["code"] == "not_found"
        assert (await http.get("/f/")).json()["error"]["code"] == "not_found"
        nul = await http.get("/f/a%00")
        assert (nul.status_code, nul.json()["error"]["code"]) == (400, "invalid_path")
        too_big = await http.get("/f/a", headers={"Content-Length": str(10**9)})
        assert too_big.status_code == 413


async def test_request_ids_are_echoed_or_made() -> None:
    async with client() as http:
        given = await http.get("/f/a", headers={"X-Request-Id": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = await http.get("/f/a")
        assert len(made.headers["x-request-id"]) == 32
        twin = await http.get("/f/a", headers={"X-Request-Id": "abc-123", "Content-Length": "0"})
        assert twin.headers["x-request-id"] == "abc-123"


def _requests(route: str, status: str) -> float:
    return metrics.HTTP_REQUESTS.labels(route, "GET", status)._value.get()


def _timed(route: str) -> float:
    return metrics.HTTP_SECONDS.labels(route, "GET")._sum.get()


async def test_access_metrics_are_labelled_by_the_route_template() -> None:
    before = _requests("/f/{x}", "2xx"), _timed("/f/{x}")
    async with client() as http:
        await http.get("/f/a")
        await http.get("/f/b")
        await http.get("/f/c", headers={"Content-Length": "0"})  # the twin counts alike
    assert _requests("/f/{x}", "2xx") == before[0] + 3
    assert _timed("/f/{x}") > before[1]


@pytest.mark.parametrize(
    ("failure", "status", "code"), [("bug", 500, "internal"), ("down", 503, "unavailable")]
)
async def test_an_unexpected_failure_answers_as_a_routed_one(
    failure: str, status: int, code: str
) -> None:
    before = _requests("/fail/{x}", "5xx")
    given = {"X-Request-Id": "req-7"}
    async with client() as http:
        fast_answer = await http.get(f"/fail/{failure}", headers=given)
        routed = await http.get(f"/routed-failing/{failure}", headers=given)
        made = await http.get(f"/routed-failing/{failure}")
    for answer in (fast_answer, routed):
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
        # The id to quote, in the envelope and the header alike.
        assert answer.headers["x-request-id"] == "req-7"
        assert "(request req-7)" in answer.json()["error"]["message"]
    made_id = made.headers["x-request-id"]
    assert len(made_id) == 32 and f"(request {made_id})" in made.json()["error"]["message"]
    assert fast_answer.json() == routed.json()
    assert sorted(fast_answer.headers) == sorted(routed.headers)
    assert _requests("/fail/{x}", "5xx") == before + 1


def test_a_prefix_is_one_segment() -> None:
    for prefix in ("/c", "c/", "/c/d/", "/", "//"):
        with pytest.raises(ValueError):
            FastRoute(prefix, "/x", fast)
