"""ExtenderApp's direct path (scheduler/extender/routes.py): a POST to a verb goes straight to its handler,
answered exactly as through FastAPI's routing; everything else still goes through FastAPI."""

from __future__ import annotations

from typing import Any

import pytest
from extender_support import args, fixture_nodes, pod, post, serve
from fastapi.testclient import TestClient

from scheduler.extender.app import create_app
from scheduler.settings import Settings


def test_the_four_verbs_have_a_direct_path_under_the_prefix() -> None:
    app = create_app(Settings(url_prefix="/gpupack"))
    assert sorted(app.verbs) == [f"/gpupack/{v}" for v in ("bind", "filter", "preempt", "prioritize")]


def test_verbs_answer_without_fastapi_routing_and_the_rest_still_routes(shared: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = fixture_nodes(shared)
    names = [n["metadata"]["name"] for n in nodes]
    p = pod("direct", {"nvidia.com/gpu": "1"})
    with serve(nodes) as (client, _, _):
        routed = post(client, "filter", args(p, names))
        app: Any = client.app

        async def no_routing(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError(f"FastAPI's router was asked for {scope['path']}")

        monkeypatch.setattr(app, "middleware_stack", no_routing)
        assert post(client, "filter", args(p, names)) == routed  # same answer, FastAPI never involved
        r = client.post("/prioritize", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json() == []  # the verb's own error handling, on the direct path
        assert "server-timing" in r.headers
        with pytest.raises(AssertionError, match="router was asked for /healthz"):
            client.get("/healthz")
        monkeypatch.undo()
        assert client.get("/healthz").json() == {"ok": True}
        assert client.post("/nonexistent", content=b"{}").status_code == 404  # unknown POSTs: FastAPI's 404


def test_a_plain_testclient_reaches_the_direct_path() -> None:
    with TestClient(create_app(Settings())) as client:
        r = client.post("/filter", content=b"[]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "bad filter request" in r.json()["Error"]
