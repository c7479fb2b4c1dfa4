"""The no-op ceiling app answers a ranking request with a fixed, well-formed answer."""

from __future__ import annotations

from fastapi.testclient import TestClient

from benchmarks.noop_app import noop_api
from serving.schemas import RankResponse


def test_the_noop_app_answers_any_path_like_the_ranking_api() -> None:
    client = TestClient(noop_api())
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    first = client.post("/v1/rank", json={"buyer_id": "b1"})
    second = client.post("/v1/rank", json={"buyer_id": "b1"})
    assert first.status_code == 200
    answer = RankResponse.model_validate(first.json())
    assert answer.offers == [] and answer.model_version == "noop"
    assert first.json()["decision_id"] != second.json()["decision_id"]
