"""The training pipeline as Ray tasks: load, fit (held-out and full), evaluate.

The dataset is loaded and validated in the driver first (`load_data`), before Ray
starts or MLflow records anything, so a dataset that breaks the contract stops the run
before any work; the stages then read that one validated copy from Ray's object store.
Stages and what runs beside what (each task gets `ray.cpus_per_task` CPUs and as many
model threads)::

    load + validate (driver)
      |-- held-out branch: MF || journey -> response/uplift + features -> evaluation
      |                                                   (policy value, value calibration)
      |-- full branch:     MF || journey -> response/uplift + features  (the model shipped)
      |                    (`evaluation.refit: false`: the held-out fit is shipped instead,
      |                    its feature store rebuilt as of the data's end)
      '-- item ranking:    MF vs popularity vs personal frequency

The functions below the `run_*` entry points are plain functions of `recsys`; Ray only
schedules them, so each is testable without Ray. The dataset travels between tasks as
Arrow buffers in Ray's shared object store (`SharedDataset`), never as pickled frames.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data import Dataset
from recsys.data.loader import load_dataset_files
from recsys.data.seller_terms import SELLERS_TRUTH, seller_terms
from recsys.data.sources import Part, data_files
from recsys.data.synthetic import generate
from recsys.evaluation.holdout import (
    HoldoutConfig,
    HoldoutReport,
    HoldoutSplit,
    cross_fitted_report,
    evaluate_holdout,
    holdout_split,
    item_ranking_metrics,
)
from recsys.models.journey import JourneyModel
from recsys.models.mf import MatrixFactorization
from recsys.models.ranker import PromoRanker, RankerConfig, data_end, fit_journey, fit_mf
from training.config import DataConfig, RayConfig, TrainConfig

Echo = Callable[[str], None]
CONTRACT_FILES = ("items", "events", "buyers", "offers", "offer_items", "exposures", "redemptions")


@dataclass
class DataInfo:
    """What was trained on: where, a digest of the files, and row counts."""

    path: str
    digest: str
    rows: dict[str, int]
    summary: str


@dataclass
class PipelineResult:
    """Everything a run produced, for tracking and registration."""

    ranker: PromoRanker
    model_config: RankerConfig
    evaluation: HoldoutReport
    data: DataInfo
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time of each stage task (all its threads): its cost whatever else runs."""
    notes: list[str] = field(default_factory=list)
    config: TrainConfig | None = None
    """The config as run: the settings left null for the data's size filled in
    (`sized_for_data`); None: the caller's config as given."""


# ---------------------------------------------------------------------------- data


def check_data_paths(config: DataConfig) -> None:
    """`FileNotFoundError` unless `path` (when set) and every decision log are directories.

    Cheap, so a run checks it before connecting to MLflow or starting Ray.
    """
    if config.path is not None and not config.path.is_dir():
        raise FileNotFoundError(
            f"data.path {config.path} is not a directory; point it at a dataset in the "
            "data contract's form (or set it to null to use the synthetic marketplace)"
        )
    for log in config.decision_logs:
        if not log.is_dir():
            raise FileNotFoundError(
                f"data.decision_logs: {log} is not a directory; point it at a serving decision "
                "log (the serve config's decision_log_dir, holding exposures/ and redemptions/)"
            )


def prepare_data(config: DataConfig, echo: Echo) -> Path:
    """The dataset directory: `path`, or the synthetic marketplace (generated once per
    distinct config, then reused)."""
    check_data_paths(config)
    if config.path is not None:
        return config.path
    spec = config.synthetic.to_dict()
    key = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:12]
    out = (
        config.synthetic_dir / f"buyers{config.synthetic.buyers}-seed{config.synthetic.seed}-{key}"
    )
    if (out / "events.parquet").exists():
        echo(f"synthetic marketplace: reusing {out}")
        return out
    echo(f"synthetic marketplace: generating {config.synthetic.buyers:,} buyers into {out}")
    report = generate(config.synthetic, out, overwrite=True)
    echo(report.format())
    return out


def file_digest(path: Path, decision_logs: Sequence[Path] = ()) -> str:
    """SHA-256 over every contract file the loader reads (name and bytes), truth excluded.

    Part directories and decision logs count too; a dataset of plain table files keeps
    the digest it had before parts were read, so earlier runs stay comparable.
    """
    return files_digest(data_files(path, decision_logs))


def files_digest(files: Sequence[Part]) -> str:
    """SHA-256 over the files' names (relative to their dataset or log) and bytes."""
    digest = hashlib.sha256()
    for part in files:
        digest.update(part.key.encode())
        with part.path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def with_truth_margins(
    model: RankerConfig, path: Path, config: DataConfig
) -> tuple[RankerConfig, list[str]]:
    """Seller margins and the send cost from a synthetic marketplace's truth, where the
    config gives none (`RankerConfig.with_seller_terms`)."""
    terms = seller_terms(path) if config.margins_from_truth else None
    if terms is None:
        return model, []
    out = model.with_seller_terms(terms, keep_given=True)
    notes = []
    if out.seller_margins != model.seller_margins:
        notes.append(
            f"seller margins taken from {path / SELLERS_TRUTH} ({len(terms.margins)} sellers)"
        )
    if out.policy.send_cost != model.policy.send_cost:
        notes.append(
            f"send cost {out.policy.send_cost:g} per offer taken from {path / SELLERS_TRUTH}"
        )
    return out, notes


def threaded(model: RankerConfig, threads: int) -> RankerConfig:
    """The model config with every model's thread count set to a task's CPUs."""
    out = model.model_copy(deep=True)
    out.mf.num_threads = threads
    out.journey.model.num_threads = threads
    out.response.num_threads = threads
    return out


# ---------------------------------------------------------------------------- stages


def load_stage(path: str, decision_logs: Sequence[str] = ()) -> tuple[Dataset, DataInfo]:
    """The dataset at `path` with the decision logs' rows added, and what it holds."""
    logs = [Path(log) for log in decision_logs]
    dataset, files = load_dataset_files(path, logs)
    rows = {
        name: table.height for name in CONTRACT_FILES if (table := dataset.table(name)) is not None
    }
    summary = dataset.summary().format()
    if logs:
        summary += "\ndecision logs added: " + ", ".join(map(str, logs))
    info = DataInfo(
        path=str(path),
        digest=files_digest(files),  # the files read, even if a live log adds parts
        rows=rows,
        summary=summary,
    )
    return dataset, info


@dataclass
class LoadedData:
    """The run's dataset, loaded and validated once in the driver (`load_data`).

    `dataset` is the driver's copy until `share` puts it into Ray's object store; from
    then on every stage (and the gate's re-evaluation) reads `ref`, never the files again.
    """

    path: Path
    info: DataInfo
    dataset: Dataset | None
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds spent preparing (generating) and loading the data."""
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    """The driver's peak RSS right after loading."""
    ref: Any = None
    """Ray object ref of the `SharedDataset`, once shared."""


def load_data(config: DataConfig, echo: Echo = print) -> LoadedData:
    """The dataset of `config` (generated first when synthetic), loaded and validated here.

    Raises `ContractError` naming every violation: called before Ray starts and before
    MLflow is written to, it stops a run on bad data before any work or record. The data
    is read and checked once per run; `share` hands this copy to the stages.
    """
    began = time.perf_counter()
    path = prepare_data(config, echo)
    prepared = time.perf_counter()
    cpu = cpu_seconds()
    dataset, info = load_stage(str(path), [str(log) for log in config.decision_logs])
    loaded = time.perf_counter() - prepared
    echo(f"[{loaded:6.1f}s] finished load and validate ({loaded:.1f}s)")
    echo(info.summary)
    return LoadedData(
        path=path,
        info=info,
        dataset=dataset,
        seconds={"prepare_data": prepared - began, "load and validate": loaded},
        cpu_seconds=cpu_seconds() - cpu,
        peak_rss_mb=peak_rss_mb(),
    )


def share(data: LoadedData) -> Any:
    """The dataset's ref in Ray's object store: put there on the first call, as Arrow
    buffers (`SharedDataset`), and the driver's copy dropped (its memory is the stages')."""
    import ray

    if data.ref is None:
        assert data.dataset is not None, "the dataset was dropped before it was shared"
        data.ref = ray.put(SharedDataset.of(data.dataset))
        data.dataset = None
    return data.ref


def split_stage(dataset: Dataset, waves: int) -> HoldoutSplit | None:
    return holdout_split(dataset, waves)


def _as_of(dataset: Dataset, split: HoldoutSplit | None) -> datetime:
    return split.start if split is not None else data_end(dataset)


def _records(dataset: Dataset, split: HoldoutSplit | None) -> Dataset:
    """The dataset with its exposures and redemptions before the split (the response
    stage's training examples); the events stay whole, since every stage reads them only
    before its as_of (lazily), and copying them is gigabytes at a million buyers."""
    if split is None:
        return dataset

    def cut(frame: pl.DataFrame | None) -> pl.DataFrame | None:
        return None if frame is None else frame.filter(pl.col("ts") < split.start)

    return replace(dataset, exposures=cut(dataset.exposures), redemptions=cut(dataset.redemptions))


def mf_stage(
    model: RankerConfig, dataset: Dataset, split: HoldoutSplit | None
) -> MatrixFactorization:
    # fit_mf reads only events before as_of (lazily): no copy of the data before the split.
    return fit_mf(model, dataset, _as_of(dataset, split))


def journey_stage(
    model: RankerConfig, dataset: Dataset, split: HoldoutSplit | None
) -> JourneyModel:
    # fit_journey reads only events before as_of; buyers and items are never cut.
    return fit_journey(model, dataset, _as_of(dataset, split))


def response_stage(
    model: RankerConfig,
    dataset: Dataset,
    split: HoldoutSplit | None,
    mf: MatrixFactorization,
    journey: JourneyModel,
) -> PromoRanker:
    """Response and uplift, feature store: the ranker, finished."""
    return PromoRanker.from_parts(
        model, _records(dataset, split), _as_of(dataset, split), mf, journey
    )


def evaluate_stage(
    ranker: PromoRanker, dataset: Dataset, split: HoldoutSplit, config: HoldoutConfig
) -> HoldoutReport:
    return evaluate_holdout(ranker, dataset, split, config)


def items_stage(dataset: Dataset, model: RankerConfig, config: HoldoutConfig) -> dict[str, float]:
    return item_ranking_metrics(dataset, model, config)


def refresh_stage(ranker: PromoRanker, dataset: Dataset) -> PromoRanker:
    """The held-out fit, shipped as it is (`evaluation.refit: false`): its feature store
    rebuilt as of the data's end."""
    return ranker.refreshed(dataset)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process so far, all its threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------- Ray


@dataclass(frozen=True)
class SharedDataset:
    """A `Dataset` as Arrow record batches: the form in which it travels between Ray tasks.

    A polars frame pickles into one opaque byte string that every task would decode into
    a private copy: at a million buyers (21 million events) that is 2.8 GB written in
    about 30 s when it is put, then 20 s and the whole dataset's memory again in each
    of the nine tasks that read it. Arrow record batches pickle as their buffers instead
    (out of band): Ray keeps one copy in its shared-memory object store, every task on
    the node maps it without copying, and `pl.from_arrow` wraps the buffers without
    copying either (the newest Arrow compatibility level keeps polars' string views).
    Batches, not tables: Ray re-encodes Arrow *tables* through its own reducer, which
    does not know string views.
    """

    tables: dict[str, tuple[Any, list[Any]]]
    """Table name -> (`pyarrow.Schema`, its `pyarrow.RecordBatch` list), for the tables
    the dataset has."""
    source: Path | None = None

    @classmethod
    def of(cls, dataset: Dataset) -> SharedDataset:
        level = pl.CompatLevel.newest()
        tables = {}
        for name in CONTRACT_FILES:
            frame = dataset.table(name)
            if frame is not None:
                table = frame.to_arrow(compat_level=level)
                tables[name] = (table.schema, table.to_batches())
        return cls(tables, dataset.source)

    def dataset(self) -> Dataset:
        """The dataset again, its frames backed by the shared buffers (read-only)."""
        import pyarrow as pa

        frames: dict[str, pl.DataFrame] = {}
        for name, (schema, batches) in self.tables.items():
            frame = pl.from_arrow(pa.Table.from_batches(batches, schema=schema))
            assert isinstance(frame, pl.DataFrame)
            frames[name] = frame
        return Dataset(**frames, source=self.source)


def _shared(value: Any) -> Any:
    return SharedDataset.of(value) if isinstance(value, Dataset) else value


def _unshared(value: Any) -> Any:
    return value.dataset() if isinstance(value, SharedDataset) else value


def prefer_this_interpreter() -> None:
    """Ray workers run this process's Python and packages.

    Under `uv run`, Ray would otherwise start workers through `uv run` again (its uv
    runtime-env hook), which fails for a locked, already-synced environment. Must run
    before `ray` is first imported; a user's explicit setting wins.
    """
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def init_ray(config: TrainConfig, echo: Echo) -> None:
    """Connect to the configured cluster, or start a local Ray sized to this machine."""
    prefer_this_interpreter()
    import ray

    if ray.is_initialized():
        return
    address = config.ray_address()
    env = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if address:
        echo(f"ray: connecting to {address}")
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:
        ray.init(
            address="local",  # a fresh local Ray, never a stale cluster of `ray start`
            num_cpus=config.ray.num_cpus,
            include_dashboard=False,
            runtime_env={"env_vars": env},
            log_to_driver=False,
        )
    cpus = int(ray.cluster_resources().get("CPU", 0))
    echo(f"ray: {cpus} CPUs ({'cluster ' + address if address else 'local'})")


def _remote(fn: Callable[..., Any], cpus: int, returns: int = 1, fresh: bool = False) -> Any:
    """`fn` as a Ray task returning its outputs and (peak RSS, seconds); `fresh`: in a
    worker process of its own, which exits after it (whatever memory the task's
    libraries kept, an idle worker keeps it no longer)."""
    import ray

    def measured(*args: Any, _after: Any = None) -> Any:
        # `_after`: another task's result this one waits for (its value is not used).
        began, cpu = time.perf_counter(), cpu_seconds()
        out = fn(*[_unshared(a) for a in args])
        stats = (peak_rss_mb(), time.perf_counter() - began, cpu_seconds() - cpu)
        return (_shared(out), stats) if returns == 1 else (*map(_shared, out), stats)

    measured.__name__ = fn.__name__
    measured.__qualname__ = fn.__qualname__
    task = ray.remote(max_calls=1)(measured) if fresh else ray.remote(measured)
    return task.options(num_cpus=cpus, num_returns=returns + 1, max_retries=0)


def _events_reach(threshold: int | None, info: DataInfo) -> bool:
    """Whether the data holds at least `threshold` events (None: never)."""
    return threshold is not None and info.rows.get("events", 0) >= threshold


def large_data(config: RayConfig, info: DataInfo) -> bool:
    """Whether the data is large enough for the large-data settings
    (`RayConfig.large_data_from_events`)."""
    return _events_reach(config.large_data_from_events, info)


def sized_for_data(config: TrainConfig, info: DataInfo) -> tuple[TrainConfig, list[str]]:
    """`config` with the settings left null for the data's size filled in
    (`ray.heavy_stages`, `evaluation.refit`), and a note naming those it chose.

    Large data (`large_data`): one memory-heavy stage at a time, and the held-out fit is
    registered instead of a second fit on all the data; else no limit, and a refit. An
    explicit setting always wins. Cost: nothing (row counts are already known).
    """
    large = large_data(config.ray, info)
    heavy = config.ray.heavy_stages
    refit = config.evaluation.refit
    chosen = []
    if heavy is None and large:
        heavy = 1
        chosen.append("ray.heavy_stages 1")
    if refit is None:
        refit = not large
        if large:
            chosen.append("evaluation.refit false")
    sized = config.model_copy(
        update={
            "ray": config.ray.model_copy(update={"heavy_stages": heavy}),
            "evaluation": config.evaluation.model_copy(update={"refit": refit}),
        }
    )
    notes = []
    if chosen:
        notes.append(
            f"large data ({info.rows.get('events', 0):,} events, from "
            f"ray.large_data_from_events = {config.ray.large_data_from_events:,} on): "
            f"{' and '.join(chosen)}; set them to choose otherwise"
        )
    return sized, notes


def fresh_workers(config: RayConfig, info: DataInfo) -> bool:
    """Whether every stage gets a worker of its own (`RayConfig.fresh_workers_from_events`)."""
    return _events_reach(config.fresh_workers_from_events, info)


def _heavy_cpus(cpus: int, heavy_at_once: int) -> int:
    """CPUs for each of `heavy_at_once` heavy tasks: an equal share of the largest node
    (never fewer than `cpus`, never more than one node has)."""
    import ray

    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    largest = int(max(nodes, default=cpus))
    return max(cpus, min(largest, largest // heavy_at_once))


class _Tracker:
    """Waits for named task results and prints each stage as it finishes."""

    def __init__(self, echo: Echo) -> None:
        self.echo = echo
        self.began = time.perf_counter()
        self.pending: dict[Any, str] = {}
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.rss: dict[str, float] = {}

    def started(self, label: str, stats_ref: Any) -> None:
        self.pending[stats_ref] = label
        self.echo(f"[{self.elapsed():6.1f}s] queued   {label}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def wait_all(self) -> None:
        import ray

        while self.pending:
            done, _ = ray.wait(list(self.pending), num_returns=1)
            for ref in done:
                label = self.pending.pop(ref)
                rss, seconds, cpu = ray.get(ref)
                self.rss[label], self.seconds[label] = float(rss), float(seconds)
                self.cpu[label] = float(cpu)
                self.echo(f"[{self.elapsed():6.1f}s] finished {label} ({seconds:.1f}s)")


class _Stages:
    """Submits the pipeline's stages as Ray tasks on one dataset and tracks them."""

    def __init__(
        self,
        dataset: Any,
        cpus: int,
        echo: Echo,
        heavy_at_once: int | None = None,
        fresh: bool = False,
    ) -> None:
        """`dataset`: the ref of the run's `SharedDataset` (`share`); `fresh`: every
        stage in a worker of its own (always so with `heavy_at_once`)."""
        import ray

        self.dataset = dataset
        self.cpus = cpus
        self.heavy_at_once = heavy_at_once
        self.heavy: list[Any] = []
        """Stats refs of the memory-heavy tasks, in submission order."""
        self.heavy_cpus = cpus if heavy_at_once is None else _heavy_cpus(cpus, heavy_at_once)
        """CPUs (and model threads) of a heavy task: with a limit, a share of the largest
        node, so the heavy stages that run one after another use the CPUs the light ones
        (all done by then) left."""
        # Memory matters when heavy stages are limited: then every stage runs in a worker
        # of its own, so no idle worker keeps what a finished stage's libraries held on to.
        self.fresh = fresh or heavy_at_once is not None
        self.tracker = _Tracker(echo)
        self._ray = ray

    @classmethod
    def of(cls, config: TrainConfig, data: LoadedData, echo: Echo) -> _Stages:
        """The stages of a run of `config` on `data` (shared into the object store)."""
        ray_config = config.ray
        return cls(
            share(data),
            ray_config.cpus_per_task,
            echo,
            ray_config.heavy_stages,
            fresh_workers(ray_config, data.info),
        )

    def _heavy_turn(self) -> Any:
        """What the next memory-heavy task waits for: with `heavy_at_once` = n, the end of
        the n-th heavy task before it (Ray starts a task once its arguments are ready), so
        at most n of them hold memory at once; None: no wait."""
        n = self.heavy_at_once
        return self.heavy[-n] if n is not None and len(self.heavy) >= n else None

    def split(self, waves: int) -> HoldoutSplit | None:
        def split_task(dataset: SharedDataset, waves: int) -> HoldoutSplit | None:
            return split_stage(dataset.dataset(), waves)

        task = self._ray.remote(split_task).options(num_cpus=0)
        return self._ray.get(task.remote(self.dataset, waves))

    def fit(self, model: RankerConfig, split: HoldoutSplit | None) -> Any:
        """MF and journey side by side, then response and uplift: the ranker's ref."""
        which = "held-out fit" if split is not None else "full fit"
        mf, s1 = _remote(mf_stage, self.cpus, fresh=self.fresh).remote(model, self.dataset, split)
        self.tracker.started(f"matrix factorization ({which})", s1)
        journey, s2 = _remote(journey_stage, self.cpus, fresh=self.fresh).remote(
            model, self.dataset, split
        )
        self.tracker.started(f"purchase journey ({which})", s2)
        ranker, s3 = _remote(response_stage, self.heavy_cpus, fresh=self.fresh).remote(
            threaded(model, self.heavy_cpus),
            self.dataset,
            split,
            mf,
            journey,
            _after=self._heavy_turn(),
        )
        self.heavy.append(s3)
        self.tracker.started(f"response and uplift ({which})", s3)
        return ranker

    def evaluate(self, ranker: Any, split: HoldoutSplit, config: HoldoutConfig) -> Any:
        report, stats = _remote(evaluate_stage, self.heavy_cpus, fresh=self.fresh).remote(
            ranker, self.dataset, split, config, _after=self._heavy_turn()
        )
        self.heavy.append(stats)
        self.tracker.started("evaluation: policy value, uplift, targeting, calibration", stats)
        return report

    def refresh(self, ranker: Any) -> Any:
        """The ref of `ranker` with its features as of the data's end."""
        refreshed, stats = _remote(refresh_stage, self.heavy_cpus, fresh=self.fresh).remote(
            ranker, self.dataset, _after=self._heavy_turn()
        )
        self.heavy.append(stats)
        self.tracker.started("feature store as of the data's end (held-out fit shipped)", stats)
        return refreshed

    def item_ranking(self, model: RankerConfig, config: HoldoutConfig) -> Any:
        metrics, stats = _remote(items_stage, self.cpus, fresh=self.fresh).remote(
            self.dataset, model, config
        )
        self.tracker.started("item ranking vs baselines", stats)
        return metrics


def run_pipeline(
    config: TrainConfig, echo: Echo = print, data: LoadedData | None = None
) -> PipelineResult:
    """Every stage on Ray; returns the full-data ranker and its held-out evaluation.

    `data`: the dataset `load_data` already loaded and validated (loaded here if None).
    """
    import ray

    began = time.perf_counter()
    before = 0.0 if data is None else sum(data.seconds.values())  # loaded before the call
    if data is None:
        data = load_data(config.data, echo)
    path, info = data.path, data.info
    seconds = {"prepare_data": data.seconds.get("prepare_data", 0.0)}
    config, sized = sized_for_data(config, info)
    for note in sized:
        echo(note)
    init_ray(config, echo)
    cpus = config.ray.cpus_per_task
    stages = _Stages.of(config, data, echo)
    model, notes = with_truth_margins(config.model, path, config.data)
    notes = sized + notes
    model = threaded(model, cpus)
    split = stages.split(config.evaluation.waves)
    evaluation_ref = ranker_ref = None
    if split is None:
        notes.append(
            "fewer than two randomized campaign waves (exposures with propensities) to "
            "hold out: the policy is judged by cross-fitting over buyers instead"
        )
    else:
        echo(
            f"held out: {split.waves} wave(s) from {split.start:%Y-%m-%d}, "
            f"{split.decisions:,} logged decisions"
        )
        held_out_ref = stages.fit(model, split)
        evaluation_ref = stages.evaluate(held_out_ref, split, config.evaluation)
        if not config.evaluation.refit:
            notes.append(
                f"evaluation.refit is false: the registered model is the held-out fit "
                f"(models fitted on data before {split.start:%Y-%m-%d}), its features "
                "rebuilt as of the data's end"
            )
            ranker_ref = stages.refresh(held_out_ref)
    if ranker_ref is None:
        ranker_ref = stages.fit(model, None)
    items_ref = stages.item_ranking(model, config.evaluation)
    stages.tracker.wait_all()

    ranker: PromoRanker = ray.get(ranker_ref)
    evaluation = (
        ray.get(evaluation_ref) if evaluation_ref is not None else cross_fitted_report(ranker)
    )
    evaluation.metrics.update(ray.get(items_ref))
    evaluation.notes.extend(notes)
    load = "load and validate"
    seconds[f"stage: {load}"] = data.seconds.get(load, 0.0)
    seconds.update({f"stage: {k}": v for k, v in stages.tracker.seconds.items()})
    cpu = {f"stage: {load}": data.cpu_seconds}
    cpu.update({f"stage: {k}": v for k, v in stages.tracker.cpu.items()})
    seconds["pipeline"] = before + time.perf_counter() - began
    rss = {load: data.peak_rss_mb, **stages.tracker.rss}
    rss["driver"] = peak_rss_mb()
    return PipelineResult(
        ranker=ranker,
        model_config=model,
        evaluation=evaluation,
        data=info,
        seconds=seconds,
        peak_rss_mb=rss,
        cpu_seconds=cpu,
        notes=notes,
        config=config,
    )


def evaluate_config(
    config: TrainConfig, model: RankerConfig, echo: Echo = print, data: LoadedData | None = None
) -> HoldoutReport:
    """Only the held-out branch, for another model config on this run's data (the gate
    re-judging a champion). The config's money terms should already be this run's.
    `data`: the run's dataset, already in the object store (loaded here if None)."""
    import ray

    if data is None:
        data = load_data(config.data, echo)
    config, _ = sized_for_data(config, data.info)
    init_ray(config, echo)
    stages = _Stages.of(config, data, echo)
    split = stages.split(config.evaluation.waves)
    model = threaded(model, config.ray.cpus_per_task)
    if split is None:  # one wave: judged by cross-fitting over buyers, as the run was
        ranker_ref = stages.fit(model, None)
        items_ref = stages.item_ranking(model, config.evaluation)
        stages.tracker.wait_all()
        crossed = cross_fitted_report(ray.get(ranker_ref))
        crossed.metrics.update(ray.get(items_ref))
        return crossed
    report_ref = stages.evaluate(stages.fit(model, split), split, config.evaluation)
    items_ref = stages.item_ranking(model, config.evaluation)
    stages.tracker.wait_all()
    report: HoldoutReport = ray.get(report_ref)
    report.metrics.update(ray.get(items_ref))
    return report
