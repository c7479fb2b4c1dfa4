"""Bad input to `recsys train`: every rule of the data contract is enforced before any work.

Table-driven: each case takes the tiny valid dataset of `tests/data/test_loader.py`, breaks
exactly one rule of DATA_CONTRACT.md, writes it as Parquet and as CSV, and trains on it
through `training.run.train` against a tracking store that already has a champion. The
run must stop with a `ContractError` naming the file (hence the table), the column and the
fix, and nothing may have started: Ray is never initialized, no pipeline stage runs, and
the store keeps exactly its run, its version and its champion. Unreadable files (cut in
half, random bytes, empty) and tables without rows get the same treatment. One real
`recsys train` subprocess proves the command's path: exit 1, the message, no traceback.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from recsys.data import ContractError
from tests.data.test_loader import Frames, valid_frames, write_dataset
from training.config import TrainConfig
from training.registry import CHAMPION, champion_version, crown, register
from training.run import train

RECSYS = str(Path(sys.executable).with_name("recsys"))
MODEL = "promo-ranker"

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"  # inside MLflow's SQL store
)


def _ts(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=UTC)


def _set(table: str, **columns: list[Any]) -> Callable[[Frames], None]:
    """Replace whole columns of one table (the valid values with one rule broken)."""

    def change(frames: Frames) -> None:
        frames[table] = frames[table].with_columns(
            pl.Series(name, values, strict=False) for name, values in columns.items()
        )

    return change


def _drop(table: str, column: str) -> Callable[[Frames], None]:
    def change(frames: Frames) -> None:
        frames[table] = frames[table].drop(column)

    return change


def _repeat_first_row(table: str) -> Callable[[Frames], None]:
    def change(frames: Frames) -> None:
        frames[table] = pl.concat([frames[table], frames[table].head(1)])

    return change


def _remove(table: str) -> Callable[[Frames], None]:
    def change(frames: Frames) -> None:
        del frames[table]

    return change


def _no_rows(table: str) -> Callable[[Frames], None]:
    def change(frames: Frames) -> None:
        frames[table] = frames[table].clear()

    return change


@dataclass(frozen=True)
class Case:
    """One broken rule: the change, and what the error must name."""

    rule: str
    change: Callable[[Frames], None]
    table: str
    """The table whose file the error names (`<table>.parquet` / `.csv`)."""
    column: str | None
    says: str
    """Words of the rule in the message."""
    fix: str
    """Words of the fix in the message (after "Fix: ")."""
    formats: tuple[str, ...] = ("parquet", "csv")
    """Where the rule can be broken (a CSV file has no types: any text is an id)."""


# One case per rule of DATA_CONTRACT.md (and of recsys/data/schema.py, which encodes it).
CASES = [
    # A required table is missing, or has no rows.
    Case(
        "required table missing",
        _remove("items"),
        "items",
        None,
        "required table items is missing",
        "export the items table",
    ),
    Case(
        "required table without rows",
        _no_rows("events"),
        "events",
        None,
        "required table events has no rows",
        "export the events rows",
    ),
    # A required column is missing: one case per table.
    Case(
        "items: required column missing",
        _drop("items", "seller_id"),
        "items",
        "seller_id",
        "required column missing",
        "rename your source's column to 'seller_id'",
    ),
    Case(
        "events: required column missing",
        _drop("events", "ts"),
        "events",
        "ts",
        "required column missing",
        "rename your source's column to 'ts'",
    ),
    Case(
        "buyers: required column missing",
        _drop("buyers", "buyer_id"),
        "buyers",
        "buyer_id",
        "required column missing",
        "or add it",
    ),
    Case(
        "offers: required column missing",
        _drop("offers", "tool"),
        "offers",
        "tool",
        "required column missing",
        "or add it",
    ),
    Case(
        "offer_items: required column missing",
        _drop("offer_items", "item_id"),
        "offer_items",
        "item_id",
        "required column missing",
        "or add it",
    ),
    Case(
        "exposures: required column missing",
        _drop("exposures", "ts"),
        "exposures",
        "ts",
        "required column missing",
        "or add it",
    ),
    Case(
        "redemptions: required column missing",
        _drop("redemptions", "offer_id"),
        "redemptions",
        "offer_id",
        "required column missing",
        "or add it",
    ),
    # A wrong type: one case per kind of value (id, timestamp, number, whole number).
    Case(
        "id of a wrong type",
        _set("events", buyer_id=[True, False, True, True, False]),
        "events",
        "buyer_id",
        "cannot be read as an id",
        "ids must be text or whole numbers",
        ("parquet",),
    ),
    Case(
        "timestamp that is not one",
        _set("events", ts=["2024-01-01", "yesterday", "2024-01-02", "2024-01-03", "2024-01-05"]),
        "events",
        "ts",
        "cannot be read as a timestamp",
        "ISO 8601",
    ),
    Case(
        "timestamp column of another type",
        _set("exposures", ts=[1, 2, 3]),
        "exposures",
        "ts",
        "has type Int64, which cannot be read as a timestamp",
        "store a datetime or date column",
        ("parquet",),
    ),
    Case(
        "number that is not one",
        _set("items", price=["10", "ten", "5.5"]),
        "items",
        "price",
        "cannot be read as a number",
        "plain numbers",
    ),
    Case(
        "whole number that is not one",
        _set("events", quantity=[1.0, 1.5, 1.0, 2.0, 1.0]),
        "events",
        "quantity",
        "cannot be read as a whole number",
        "whole numbers",
    ),
    # A null in a column that needs a value (keys, event types, timestamps).
    Case(
        "null primary key",
        _set("items", item_id=["i1", None, "i3"]),
        "items",
        "item_id",
        "no value",
        "every row needs a item_id",
    ),
    Case(
        "null buyer of an event",
        _set("events", buyer_id=["b1", None, "b2", "b2", "b3"]),
        "events",
        "buyer_id",
        "no value",
        "every row needs a buyer_id",
    ),
    Case(
        "null event type",
        _set("events", event_type=["view", "search", None, "purchase", "purchase"]),
        "events",
        "event_type",
        "no value",
        "every row needs a event_type",
    ),
    Case(
        "null tool of an offer",
        _set("offers", tool=[None, "amount_off"]),
        "offers",
        "tool",
        "no value",
        "every row needs a tool",
    ),
    Case(
        "null exposure time",
        _set("exposures", ts=[_ts(1), None, _ts(2)]),
        "exposures",
        "ts",
        "no value",
        "every row needs a ts",
    ),
    Case(
        "null redeemed offer",
        _set("redemptions", offer_id=[None]),
        "redemptions",
        "offer_id",
        "no value",
        "every row needs a offer_id",
    ),
    # A duplicate primary key: one case per table that has one.
    Case(
        "duplicate item_id",
        _repeat_first_row("items"),
        "items",
        "item_id",
        "duplicate item_id",
        "keep one row per key",
    ),
    Case(
        "duplicate buyer_id",
        _repeat_first_row("buyers"),
        "buyers",
        "buyer_id",
        "duplicate buyer_id",
        "keep one row per key",
    ),
    Case(
        "duplicate offer_id",
        _repeat_first_row("offers"),
        "offers",
        "offer_id",
        "duplicate offer_id",
        "keep one row per key",
    ),
    Case(
        "duplicate offer item",
        _repeat_first_row("offer_items"),
        "offer_items",
        "offer_id, item_id",
        "duplicate key (offer_id, item_id)",
        "keep one row per key",
    ),
    Case(
        "duplicate exposure_id",
        _repeat_first_row("exposures"),
        "exposures",
        "exposure_id",
        "duplicate exposure_id",
        "keep one row per key",
    ),
    # An id that refers to nothing: every foreign key of the contract.
    Case(
        "event of an unknown item",
        _set("events", item_id=["i1", None, "i9", "i2", "i3"]),
        "events",
        "item_id",
        "no match in items",
        "add the missing rows",
    ),
    Case(
        "offer of an unknown seller",
        _set("offers", seller_id=["s9", None]),
        "offers",
        "seller_id",
        "no match in items",
        "use null for a platform-wide offer",
    ),
    Case(
        "offer item of an unknown offer",
        _set("offer_items", offer_id=["of1", "of9"]),
        "offer_items",
        "offer_id",
        "no match in offers",
        "add the missing rows",
    ),
    Case(
        "offer item of an unknown item",
        _set("offer_items", item_id=["i1", "i9"]),
        "offer_items",
        "item_id",
        "no match in items",
        "add the missing rows",
    ),
    Case(
        "exposure of an unknown offer",
        _set("exposures", offer_id=["of1", "of2", "of9"]),
        "exposures",
        "offer_id",
        "no match in offers",
        "add the missing rows",
    ),
    Case(
        "redemption of an unknown offer",
        _set("redemptions", offer_id=["of9"]),
        "redemptions",
        "offer_id",
        "no match in offers",
        "add the missing rows",
    ),
    Case(
        "redemption of an unknown exposure",
        _set("redemptions", exposure_id=["e9"]),
        "redemptions",
        "exposure_id",
        "no match in exposures",
        "add the missing rows",
    ),
    Case(
        "reference to an absent table",
        _remove("exposures"),
        "redemptions",
        "exposure_id",
        "there is no exposures table",
        "add exposures.parquet, or leave exposure_id null",
    ),
    Case(
        "redemption of another buyer's exposure",
        _set("redemptions", buyer_id=["b1"]),
        "redemptions",
        "exposure_id",
        "different buyer or offer",
        "the same buyer_id and offer_id",
    ),
    # A value outside its set or range.
    Case(
        "unknown event type",
        _set("events", event_type=["view", "click", "add_to_cart", "purchase", "purchase"]),
        "events",
        "event_type",
        "unknown event type",
        "map your source's event names",
    ),
    Case(
        "negative price",
        _set("items", price=[10.0, -1.0, 5.5]),
        "items",
        "price",
        "price below 0",
        "at least 0",
    ),
    Case(
        "negative event amount",
        _set("events", amount=[None, None, None, -40.0, 5.5]),
        "events",
        "amount",
        "amount below 0",
        "at least 0",
    ),
    Case(
        "quantity below one",
        _set("events", quantity=[1, 0, 1, 2, 1]),
        "events",
        "quantity",
        "quantity below 1",
        "at least 1",
    ),
    Case(
        "negative offer value",
        _set("offers", value=[0.1, -5.0]),
        "offers",
        "value",
        "value below 0",
        "at least 0",
    ),
    Case(
        "negative min_spend",
        _set("offers", min_spend=[None, -20.0]),
        "offers",
        "min_spend",
        "min_spend below 0",
        "at least 0",
    ),
    Case(
        "negative cost",
        _set("offers", cost=[None, -5.0]),
        "offers",
        "cost",
        "cost below 0",
        "at least 0",
    ),
    Case(
        "negative redemption amount",
        _set("redemptions", amount=[-40.0]),
        "redemptions",
        "amount",
        "amount below 0",
        "at least 0",
    ),
    Case(
        "percent_off as a percentage",
        _set("offers", value=[10.0, 5.0]),
        "offers",
        "value",
        "percent_off value outside (0, 1]",
        "10 % is 0.1",
    ),
    Case(
        "propensity outside (0, 1]",
        _set("exposures", propensity=[0.5, 1.5, None]),
        "exposures",
        "propensity",
        "propensity outside (0, 1]",
        "leave it null when unknown",
    ),
    # Timestamps out of order: an offer that ends before it starts.
    Case(
        "offer ends before it starts",
        _set("offers", start_ts=[_ts(9), _ts(1)]),
        "offers",
        "start_ts",
        "start_ts after their end_ts",
        "check for swapped columns",
    ),
]


# --------------------------------------------------------------------------- the store


@dataclass
class Store:
    """A SQLite tracking store holding one finished run, registered as champion v1."""

    root: Path
    uri: str

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def digest(self) -> str:
        """The store's bytes: any run, version, alias or tag written changes them."""
        return hashlib.sha256(Path(self.uri.removeprefix("sqlite:///")).read_bytes()).hexdigest()

    def state(self) -> tuple[int, list[str], str | None]:
        """(runs, registered versions, champion): what a rejected run must not change."""
        client = self.client()
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        versions = sorted(str(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
        return len(runs), versions, champion_version(client, MODEL)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[[Path], str]) -> Store:
    root = tmp_path_factory.mktemp("store")
    uri = new_store(root / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(
        "promo-recsys", artifact_location=(root / "artifacts").as_uri()
    )
    run = client.create_run(experiment)
    model = root / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(run.info.run_id, str(model), "model")
    client.set_terminated(run.info.run_id)
    version = register(client, MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    crown(client, MODEL, version)
    return Store(root, uri)


class NoWork:
    """Fails the test if Ray starts or a pipeline stage runs; records what was echoed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lines: list[str] = []

        def forbidden(what: str) -> Callable[..., Any]:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise AssertionError(f"{what} before the data was validated")

            return fail

        monkeypatch.setattr("training.pipeline.init_ray", forbidden("Ray started"))
        monkeypatch.setattr("training.run.init_ray", forbidden("Ray started"))
        monkeypatch.setattr("training.run.run_pipeline", forbidden("the pipeline ran"))

    def echo(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[NoWork]:
    monkeypatch.chdir(tmp_path)  # an embedded store, if one were made, lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield NoWork(monkeypatch)
    import ray

    assert not ray.is_initialized()


def _train_rejects(data: Path, store: Store, no_work: NoWork) -> ContractError:
    """Train on `data` and return the `ContractError`; the store must be unchanged."""
    config = TrainConfig.from_dict(
        {"data": {"path": str(data)}, "tracking": {"tracking_uri": store.uri}}
    )
    before = store.digest()
    with pytest.raises(ContractError) as info:
        train(config, echo=no_work.echo)
    assert store.digest() == before  # no run, version, alias or tag was written
    assert not any(line.startswith("mlflow:") for line in no_work.lines)
    assert not Path("mlruns").exists()  # nor an embedded store made
    return info.value


def test_the_store_holds_one_run_registered_as_champion(store: Store) -> None:
    """What the rejected runs must leave as it is (checked there by the store's bytes)."""
    assert store.state() == (1, ["1"], "1")


# --------------------------------------------------------------------------- contract rules


@pytest.mark.parametrize(
    ("case", "fmt"),
    [(case, fmt) for case in CASES for fmt in case.formats],
    ids=[f"{case.rule}-{fmt}" for case in CASES for fmt in case.formats],
)
def test_each_contract_rule_is_enforced_before_any_work(
    case: Case, fmt: str, tmp_path: Path, store: Store, no_work: NoWork
) -> None:
    frames = valid_frames()
    case.change(frames)
    err = _train_rejects(write_dataset(tmp_path / "ds", frames, fmt), store, no_work)
    # The broken rule comes first; what follows can only be its consequences (the rows
    # that referred to a row whose key is now null, say), never a silent drop.
    violation = err.violations[0]
    message = str(violation)
    assert violation.file in (f"{case.table}.{fmt}", f"{case.table}.parquet"), message
    assert violation.column == case.column, message
    if case.column is not None:
        assert f"column '{case.column}'" in message
    assert case.says in message
    assert f"Fix: {violation.hint}" in message and case.fix in violation.hint
    if violation.n_bad:  # a rule about rows says how many and quotes the first
        assert f"{violation.n_bad} row" in message and "first rows: [row " in message


def test_every_rule_of_the_contract_has_a_case() -> None:
    """The table above covers each table's required columns, keys and references."""
    from recsys.data.schema import TABLES

    covered = {(c.table, c.column) for c in CASES}
    missing_column = {c.table for c in CASES if c.says == "required column missing"}
    assert missing_column == {spec.name for spec in TABLES}
    for spec in TABLES:
        if spec.primary_key:
            assert (spec.name, ", ".join(spec.primary_key)) in covered, spec.name
        for fk in spec.foreign_keys:
            assert (spec.name, fk.column) in covered, (spec.name, fk.column)
        for col in spec.columns:
            if col.min_value is not None:
                assert (spec.name, col.name) in covered, (spec.name, col.name)


# --------------------------------------------------------------------------- unreadable files


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


UNREADABLE = [
    ("events.parquet", _cut_in_half, "cannot be read as Parquet", "looks truncated or corrupt"),
    ("items.parquet", _random_bytes, "cannot be read as Parquet", "looks truncated or corrupt"),
    ("offers.parquet", _empty, "cannot be read as Parquet", "looks truncated or corrupt"),
    ("events.csv", _empty, "cannot be read as CSV", "as UTF-8 text with one header line"),
]


@pytest.mark.parametrize(
    ("name", "damage", "says", "fix"),
    UNREADABLE,
    ids=[f"{u[0]}:{u[1].__name__}" for u in UNREADABLE],
)
def test_an_unreadable_file_is_named_with_its_path_before_any_work(
    name: str,
    damage: Callable[[Path], None],
    says: str,
    fix: str,
    tmp_path: Path,
    store: Store,
    no_work: NoWork,
) -> None:
    data = write_dataset(tmp_path / "ds", fmt=name.rsplit(".", 1)[1])
    damage(data / name)
    err = _train_rejects(data, store, no_work)
    assert len(err.violations) == 1, str(err)
    message = str(err)
    assert err.file == name and message.startswith(f"{name}: {says} (")
    assert f"Fix: the file {data / name} " in message or f"Fix: save {data / name} " in message
    assert fix in message
    assert "Traceback" not in message and "pyarrow" not in message.lower()


def test_a_header_only_csv_is_a_table_without_rows(
    tmp_path: Path, store: Store, no_work: NoWork
) -> None:
    data = write_dataset(tmp_path / "ds", fmt="csv")
    (data / "events.csv").write_text("buyer_id,item_id,event_type,ts\n")
    err = _train_rejects(data, store, no_work)
    assert str(err).startswith("events.csv: the required table events has no rows")


def test_an_optional_table_without_rows_is_valid(tmp_path: Path) -> None:
    from recsys.data import load_dataset

    frames = valid_frames()
    frames["buyers"] = frames["buyers"].clear()
    assert load_dataset(write_dataset(tmp_path / "ds", frames)).buyers is not None


# --------------------------------------------------------------------------- the command


@pytest.mark.slow
def test_recsys_train_on_bad_data_exits_1_with_the_message_and_no_traceback(
    tmp_path: Path,
) -> None:
    frames = valid_frames()
    frames["events"] = frames["events"].with_columns(
        event_type=pl.Series(["view", "click", "add_to_cart", "purchase", "purchase"])
    )
    data = write_dataset(tmp_path / "ds", frames)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OPENBLAS_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    done = subprocess.run(
        [RECSYS, "train", "--data", str(data)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"invalid dataset {data}:" in done.stderr
    assert "events.parquet: column 'event_type': 1 row has an unknown event type" in done.stderr
    assert "Fix: map your source's event names" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "ray:" not in done.stdout and "mlflow:" not in done.stdout  # nothing started
    assert not (tmp_path / "mlflow.db").exists()  # nothing recorded
    assert CHAMPION not in done.stdout
