"""The `recsys` command's core: data, score and demo subcommands.

`build_app` assembles the typer app; the installed `recsys` command (`cli.main`) adds the
training and serving commands and a model resolver that understands registry URIs, so
this package never imports them. Heavy imports happen inside the commands, so
`recsys --help` is instant and importing this module has no side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from recsys.demo import DemoStep

ModelResolver = Callable[[str, Path], Path]
"""(model reference, scratch directory) -> a saved ranker directory."""


def local_model(reference: str, scratch: Path) -> Path:
    """The core resolver: a saved model directory only."""
    if "://" in reference or reference.startswith(("models:/", "runs:/")):
        raise ValueError(
            f"--model {reference}: registry URIs need the training package "
            "(run the installed `recsys` command); or pass a saved model directory"
        )
    return Path(reference)


def build_app(
    resolve_model: ModelResolver = local_model, demo_steps: Sequence[DemoStep] = ()
) -> typer.Typer:
    """The core app; `resolve_model` turns `score --model` into a directory, and
    `demo_steps` are the demo's steps owned by other packages."""
    app = typer.Typer(
        name="recsys",
        help="Personalized promotion recommendation engine: which offer, if any, for each buyer.",
        no_args_is_help=True,
        add_completion=False,
    )
    data_app = typer.Typer(
        help="Create and check datasets in the data contract's form.", no_args_is_help=True
    )
    app.add_typer(data_app, name="data")
    data_app.command("synth")(data_synth)
    data_app.command("validate")(data_validate)
    app.command("score")(make_score(resolve_model))
    report_app = typer.Typer(help="Reports computed from a dataset.", no_args_is_help=True)
    app.add_typer(report_app, name="report")
    report_app.command("incrementality")(report_incrementality)
    app.command("demo")(make_demo(demo_steps))
    return app


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def data_synth(
    out: Annotated[Path, typer.Option(help="directory to write the dataset to (new or empty)")],
    profile: Annotated[
        str,
        typer.Option(
            help="the data's shape: marketplace (the simulator), grocery-coupons, "
            "email-experiment, attributes-experiment or tiny (see docs/synthetic.md)"
        ),
    ] = "marketplace",
    buyers: Annotated[
        int | None,
        typer.Option(
            min=2, help="number of buyers (default: the profile's, 2,000 for marketplace)"
        ),
    ] = None,
    scale: Annotated[
        float, typer.Option(min=0.0001, help="multiply every count of the profile by this")
    ] = 1.0,
    seed: Annotated[int, typer.Option(min=0, help="random seed; same seed, same files")] = 0,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file of the profile's config fields (the options above win)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing non-empty --out")] = False,
    effects: Annotated[
        str | None,
        typer.Option(
            help="where the offers' effects vary: stage (default), attributes or uniform "
            "(docs/synthetic.md)"
        ),
    ] = None,
) -> None:
    """Generate a synthetic dataset (contract tables plus ground truth under truth/)."""
    from recsys.config import ConfigError, read_yaml_mapping
    from recsys.data.synthetic.profiles import PROFILES, profile_config, synthesize

    if profile not in PROFILES:
        raise _fail(f"--profile {profile!r} is not a profile; choose one of {', '.join(PROFILES)}")
    try:
        fields = read_yaml_mapping(config) if config else {}
        fields["seed"] = seed
        if profile in ("marketplace", "tiny"):
            base = buyers or fields.get("buyers") or (2000 if profile == "marketplace" else 300)
            fields["buyers"] = buyers or max(10, round(base * scale))
        else:
            fields["scale"] = scale
            if buyers is not None:
                fields["buyers"] = buyers
        if effects is not None:
            if profile not in ("marketplace", "tiny"):
                raise _fail(
                    f"--effects applies to the marketplace and tiny profiles, not {profile!r}"
                )
            fields["effects"] = effects
        cfg = profile_config(profile, fields)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        if profile in ("marketplace", "tiny"):
            with typer.progressbar(
                length=-(-cfg.buyers // cfg.chunk_buyers), label="simulating"
            ) as bar:
                report = synthesize(
                    profile, out, cfg, overwrite, progress=lambda done, total: bar.update(1)
                )
        else:
            typer.echo(f"simulating the {profile} profile")
            report = synthesize(profile, out, cfg, overwrite)
    except FileExistsError as exc:
        raise _fail(f"{exc} (use --overwrite to replace it)") from None
    typer.echo(report.format())


def data_validate(
    path: Annotated[Path, typer.Argument(help="dataset directory to check")],
) -> None:
    """Check a dataset against the data contract and summarize what it supports."""
    from recsys.data import ContractError, load_dataset

    try:
        dataset = load_dataset(path)
    except ContractError as exc:
        raise _fail(f"invalid dataset {path}:\n{exc}", code=1) from None
    typer.echo(dataset.summary().format())


def parse_window(text: str) -> float:
    """A window such as ``28d``, ``36h`` or ``7`` (days) in days; ValueError otherwise."""
    units = {"d": 1.0, "h": 1 / 24, "w": 7.0}
    raw = text.strip().lower()
    scale = units.get(raw[-1:])
    number = raw[:-1] if scale is not None else raw
    try:
        days = float(number) * (scale or 1.0)
    except ValueError:
        raise ValueError(f"--window {text!r}: write a length such as 28d, 36h or 2w") from None
    if not days > 0:
        raise ValueError(f"--window {text!r}: the window must be positive")
    return days


def report_incrementality(
    data: Annotated[Path, typer.Option(help="dataset directory (the data contract's tables)")],
    decisions: Annotated[
        list[Path] | None,
        typer.Option(help="a serving decision log directory to add (repeatable)"),
    ] = None,
    window: Annotated[
        str, typer.Option(help="outcome window per buyer after its first decision: 28d, 36h")
    ] = "28d",
    config: Annotated[
        Path | None,
        typer.Option(help="YAML of the report's settings (margins, send_cost, level, cuped)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="also write the report as JSON (the service's incrementality route "
            "reads <decision_log_dir>/incrementality.json)"
        ),
    ] = None,
) -> None:
    """Measured lift of the engine's offers vs the holdout: per seller, per tool, overall."""
    from datetime import UTC, datetime

    from recsys.config import ConfigError, read_yaml_mapping
    from recsys.data import ContractError, load_dataset
    from recsys.evaluation.incrementality import IncrementalityConfig, incrementality

    try:
        fields = read_yaml_mapping(config) if config else {}
        fields["window_days"] = parse_window(window)
        cfg = IncrementalityConfig.from_dict(fields, source=str(config or "options"))
        dataset = load_dataset(data, decisions or [])
    except (ConfigError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except ContractError as exc:
        raise _fail(str(exc), code=1) from None
    report = incrementality(dataset, cfg)
    typer.echo(report.text())
    if out is not None:
        report.write_json(out, datetime.now(UTC))
        typer.echo(f"wrote {out}")


def make_score(resolve_model: ModelResolver) -> Callable[..., None]:
    """The `score` command, resolving `--model` with `resolve_model`."""

    def score(
        model: Annotated[
            str,
            typer.Option(
                help="a saved model directory, or a registry URI such as "
                "models:/promo-ranker@champion"
            ),
        ],
        pairs: Annotated[
            Path, typer.Option(help="target list: buyer_id, offer_id (CSV or Parquet)")
        ],
        out: Annotated[Path, typer.Option(help="where to write the scores (.csv or .parquet)")],
        data: Annotated[
            Path | None,
            typer.Option(help="dataset to compute features from, as of its last event"),
        ] = None,
        threads: Annotated[
            int | None, typer.Option(min=1, help="threads for the models (default: all cores)")
        ] = None,
    ) -> None:
        """Score a target list: one row per pair, in input order (the data contract's answer)."""
        import os
        import tempfile
        import time

        from recsys.data import ContractError, load_dataset, load_pairs
        from recsys.models.ranker import PromoRanker

        if out.suffix not in (".csv", ".parquet"):
            raise _fail(f"--out {out}: use a .csv or .parquet file name")
        try:
            with tempfile.TemporaryDirectory(prefix="promo-model-") as scratch:
                ranker = PromoRanker.load(resolve_model(model, Path(scratch)))
            target = load_pairs(pairs)
            dataset = load_dataset(data) if data is not None else None
        except ContractError as exc:
            raise _fail(str(exc), code=1) from None
        except (FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc), code=1) from None
        began = time.perf_counter()
        scores = ranker.score(target, dataset, threads=threads or os.cpu_count() or 1)
        seconds = time.perf_counter() - began
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".csv":
            scores.write_csv(out)
        else:
            scores.write_parquet(out)
        cold = int(scores["cold_start"].sum())
        typer.echo(
            f"scored {scores.height:,} pairs in {seconds:.2f}s "
            f"({scores.height / max(seconds, 1e-9):,.0f}/s); {cold:,} cold-start; wrote {out}"
        )

    return score


def make_demo(steps: Sequence[DemoStep]) -> Callable[..., None]:
    """The `demo` command, with `steps` after the core ones."""

    def demo(
        out: Annotated[Path, typer.Option(help="working directory for the demo")] = Path(".demo"),
        buyers: Annotated[int, typer.Option(min=10)] = 2000,
        seed: Annotated[int, typer.Option(min=0)] = 1,
    ) -> None:
        """The main job on embedded defaults: synthesize, validate, train, track, rank."""
        from recsys.demo import run_demo

        run_demo(out, buyers=buyers, seed=seed, echo=typer.echo, steps=steps)

    return demo


app = build_app()
"""The core app alone (tests and `python -m recsys.cli`); the installed command is cli.main."""
