"""The `recsys` command: synth then validate, and validate's errors on broken datasets."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "d"
    result = runner.invoke(
        app, ["data", "synth", "--out", str(out), "--buyers", "400", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_synth_then_validate_succeeds(synth_dir: Path) -> None:
    result = runner.invoke(app, ["data", "validate", str(synth_dir)])
    assert result.exit_code == 0, result.output
    assert "events" in result.output and "[yes] uplift" in result.output


def test_synth_refuses_a_non_empty_directory(synth_dir: Path) -> None:
    before = _tree_digest(synth_dir)
    result = runner.invoke(app, ["data", "synth", "--out", str(synth_dir), "--buyers", "50"])
    assert result.exit_code != 0
    assert "--overwrite" in result.output
    assert _tree_digest(synth_dir) == before


def _drop_column(table: str, column: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda df: df.drop(column)


BREAKAGES: dict[str, tuple[str, Callable[[pl.DataFrame], pl.DataFrame], str]] = {
    "missing required column": ("events", _drop_column("events", "buyer_id"), "buyer_id"),
    "bad event_type": (
        "events",
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 5)
            .then(pl.lit("click"))
            .otherwise(pl.col("event_type"))
            .alias("event_type")
        ),
        "event_type",
    ),
    "negative price": (
        "items",
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) < 2).then(-1.0).otherwise(pl.col("price")).alias("price")
        ),
        "price",
    ),
    "duplicate offer_id": ("offers", lambda df: pl.concat([df, df.tail(1)]), "offer_id"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validate_names_file_and_column_and_writes_nothing(
    synth_dir: Path, tmp_path: Path, breakage: str
) -> None:
    table, breaks, column = BREAKAGES[breakage]
    broken = tmp_path / "broken"
    shutil.copytree(synth_dir, broken)
    path = broken / f"{table}.parquet"
    breaks(pl.read_parquet(path)).write_parquet(path)
    before = _tree_digest(broken)
    result = runner.invoke(app, ["data", "validate", str(broken)])
    assert result.exit_code != 0
    assert f"{table}.parquet" in result.output
    assert column in result.output
    assert "Traceback" not in result.output
    assert _tree_digest(broken) == before
