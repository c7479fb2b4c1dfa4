"""The ranker as an MLflow pyfunc model: signature, input validation, scores in order."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import polars as pl
import pytest

from recsys.data import ContractError, load_dataset
from recsys.data.schema import SCORES_SCHEMA
from recsys.data.synthetic import SyntheticConfig, generate
from recsys.locations import RANKER_ARTIFACT, ranker_dir
from recsys.models.ranker import PromoRanker, RankerConfig
from training.pyfunc import RankerModel, signature


class RecordingRanker:
    """Stands in for a PromoRanker: remembers the pairs it was asked, answers in order."""

    def __init__(self) -> None:
        self.asked: list[pl.DataFrame] = []

    def score(self, pairs: pl.DataFrame) -> pl.DataFrame:
        self.asked.append(pairs)
        n = pairs.height
        return pairs.select("buyer_id", "offer_id").with_columns(
            p_redeem=pl.Series([0.5] * n, dtype=pl.Float64),
            uplift=pl.Series([0.1] * n, dtype=pl.Float64),
            expected_value=pl.Series([float(i) for i in range(n)]),
            score=pl.Series([float(i) for i in range(n)]),
            cold_start=pl.Series([False] * n),
        )


def _model(ranker: object) -> RankerModel:
    model = RankerModel()
    model.ranker = ranker  # type: ignore[assignment]
    return model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[PromoRanker, Path, pl.DataFrame]:
    """A ranker fitted on a tiny marketplace, its saved directory, and known pairs."""
    market = tmp_path_factory.mktemp("pyfunc") / "d"
    generate(SyntheticConfig(buyers=300, weeks=10, seed=3), market)
    config = RankerConfig.from_dict({"mf": {"factors": 8, "iterations": 3}})
    ranker = PromoRanker(config).fit(load_dataset(market))
    saved = ranker.save(tmp_path_factory.mktemp("model") / RANKER_ARTIFACT)
    known = pl.read_parquet(market / "truth" / "offers.parquet").select("buyer_id", "offer_id")
    return ranker, saved, known.sample(20, seed=2)


# --------------------------------------------------------------------------- signature


def test_signature_is_pairs_in_and_the_contracts_scores_out() -> None:
    sig = signature()
    assert sig.inputs.input_names() == ["buyer_id", "offer_id"]
    assert [t.name for t in sig.inputs.input_types()] == ["string", "string"]
    assert sig.outputs is not None
    assert sig.outputs.input_names() == list(SCORES_SCHEMA)
    names = [t.name for t in sig.outputs.input_types()]
    types = dict(zip(sig.outputs.input_names(), names, strict=True))
    assert types == {
        "buyer_id": "string",
        "offer_id": "string",
        "p_redeem": "double",
        "uplift": "double",
        "expected_value": "double",
        "score": "double",
        "cold_start": "boolean",
    }


# --------------------------------------------------------------------------- ranker_dir


def test_ranker_dir_finds_the_saved_ranker(tmp_path: Path) -> None:
    inner = tmp_path / "artifacts" / "ranker"
    inner.mkdir(parents=True)
    (inner / "ranker.json").write_text(json.dumps({"config": {}}))
    assert ranker_dir(tmp_path) == inner
    assert ranker_dir(str(tmp_path)) == inner


def test_ranker_dir_rejects_a_directory_without_a_ranker(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a promo-ranker model"):
        ranker_dir(tmp_path)
    (tmp_path / "artifacts" / "ranker").mkdir(parents=True)  # the folder alone is not enough
    with pytest.raises(FileNotFoundError, match=r"artifacts/ranker"):
        ranker_dir(tmp_path)


# --------------------------------------------------------------------------- predict


def test_predict_rejects_input_without_offer_id() -> None:
    ranker = RecordingRanker()
    with pytest.raises(ContractError) as info:
        _model(ranker).predict(None, pd.DataFrame({"buyer_id": ["b1", "b2"]}))
    assert info.value.column == "offer_id"
    assert "model input" in str(info.value)
    assert ranker.asked == []  # nothing was scored


def test_predict_rejects_null_ids() -> None:
    ranker = RecordingRanker()
    frame = pd.DataFrame({"buyer_id": ["b1", None], "offer_id": ["o1", "o2"]})
    with pytest.raises(ContractError) as info:
        _model(ranker).predict(None, frame)
    assert (info.value.column, info.value.n_bad) == ("buyer_id", 1)
    assert ranker.asked == []


def test_predict_casts_ids_to_strings_and_answers_pandas_in_order() -> None:
    ranker = RecordingRanker()
    frame = pd.DataFrame({"offer_id": ["o2", "o1", "o2"], "buyer_id": [3, 1, 3]})
    out = _model(ranker).predict(None, frame)
    assert isinstance(out, pd.DataFrame)
    (asked,) = ranker.asked
    assert asked["buyer_id"].dtype == pl.String
    assert asked.select("buyer_id", "offer_id").rows() == [("3", "o2"), ("1", "o1"), ("3", "o2")]
    assert list(out.columns) == list(SCORES_SCHEMA)
    assert out["score"].tolist() == [0.0, 1.0, 2.0]


def test_predict_scores_one_row_per_pair_in_input_order(
    fitted: tuple[PromoRanker, Path, pl.DataFrame],
) -> None:
    ranker, _, known = fitted
    pairs = pl.concat(
        [
            known,
            pl.DataFrame(
                {
                    "buyer_id": ["never-seen", known["buyer_id"][0]],
                    "offer_id": [known["offer_id"][0], known["offer_id"][0]],
                }
            ),
        ]
    )
    out = _model(ranker).predict(None, pairs.to_pandas())
    assert isinstance(out, pd.DataFrame)
    assert len(out) == pairs.height == 22
    assert list(out.columns) == list(SCORES_SCHEMA)
    assert out["buyer_id"].tolist() == pairs["buyer_id"].to_list()
    assert out["offer_id"].tolist() == pairs["offer_id"].to_list()
    expected = ranker.score(pairs).to_pandas()
    pd.testing.assert_frame_equal(out, expected)
    assert out["cold_start"].iloc[-2]  # the unseen buyer
    assert out.iloc[-1].equals(out.iloc[0])  # a repeated pair gets the same answer


def test_load_context_reads_the_saved_ranker(
    fitted: tuple[PromoRanker, Path, pl.DataFrame],
) -> None:
    ranker, saved, known = fitted
    model = RankerModel()
    model.load_context(SimpleNamespace(artifacts={RANKER_ARTIFACT: str(saved)}))
    assert isinstance(model.ranker, PromoRanker)
    pd.testing.assert_frame_equal(
        model.predict(None, known.to_pandas()), ranker.score(known).to_pandas()
    )


@pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning")
def test_saved_pyfunc_model_loads_and_scores_like_the_ranker(
    fitted: tuple[PromoRanker, Path, pl.DataFrame], tmp_path: Path
) -> None:
    """What `mlflow.pyfunc.load_model` gives back: the same scores, input checked."""
    import mlflow
    from mlflow.exceptions import MlflowException

    ranker, saved, known = fitted
    mlflow.pyfunc.save_model(
        str(tmp_path / "m"),
        python_model=RankerModel(),
        artifacts={RANKER_ARTIFACT: str(saved)},
        signature=signature(),
        pip_requirements=[],
    )
    assert ranker_dir(tmp_path / "m") == tmp_path / "m" / "artifacts" / RANKER_ARTIFACT
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    pd.testing.assert_frame_equal(
        loaded.predict(known.to_pandas()), ranker.score(known).to_pandas()
    )
    with pytest.raises(MlflowException, match="offer_id"):
        loaded.predict(known.select("buyer_id").to_pandas())
