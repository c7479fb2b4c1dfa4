"""The training config: strict keys, `--set` overrides, `--data`, sweeps, tracking URI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from recsys.config import ConfigError
from recsys.locations import default_tracking_uri
from recsys.models.ranker import RankerConfig
from training.config import (
    SweepConfig,
    SweepParam,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(tmp_path: Path, data: Any, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _config_error(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_is_named_with_the_allowed_keys(tmp_path: Path) -> None:
    message = _config_error(_write(tmp_path, {"modle": {"mf": {"factors": 8}}}))
    assert "unknown key 'modle'" in message
    assert "allowed keys here: data, evaluation, model, ray, sweep, tracking" in message
    assert str(tmp_path / "c.yaml") in message  # the file is named


def test_unknown_nested_key_is_named_dotted_with_the_allowed_keys(tmp_path: Path) -> None:
    message = _config_error(_write(tmp_path, {"model": {"mf": {"factorz": 8}}}))
    assert "unknown key 'model.mf.factorz'" in message
    allowed = message.split("allowed keys here: ")[1].split(", ")
    assert "factors" in allowed and "iterations" in allowed and "factorz" not in allowed


def test_unknown_key_in_a_set_override_is_named_and_the_override_shown() -> None:
    message = _config_error(None, ["data.synthetic.buyerz=10"])
    assert "unknown key 'data.synthetic.buyerz'" in message
    assert "buyers" in message.split("allowed keys here: ")[1]
    assert "--set data.synthetic.buyerz=10" in message


def test_unknown_key_under_the_optional_sweep_section_lists_the_allowed_keys() -> None:
    message = _config_error(None, ["sweep.nmu_samples=3"])
    assert "unknown key 'sweep.nmu_samples'" in message
    assert "allowed keys here: max_concurrent, num_samples, params, seed" in message


def test_bad_value_names_the_key_and_the_value() -> None:
    message = _config_error(None, ["evaluation.primary_metric=auc"])
    assert "'evaluation.primary_metric'" in message and "'auc'" in message
    assert "policy_value_dr" in message  # the allowed values are listed


def test_missing_config_file_and_non_mapping_top_level_are_errors(tmp_path: Path) -> None:
    assert "does not exist" in _config_error(tmp_path / "nope.yaml")
    assert "top level must be a mapping" in _config_error(_write(tmp_path, [1, 2]))


def test_empty_file_and_no_file_give_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == TrainConfig() == load_config(None)


# --------------------------------------------------------------------------- --set and --data


def test_set_overrides_nested_values_read_as_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, {"model": {"mf": {"factors": 64, "iterations": 15}}})
    cfg = load_config(
        path,
        [
            "model.mf.factors=8",
            "model.mf.regularization=0.25",
            "model.mf.use_cg=false",
            "model.mf.iterations=null",
            "model.policy.budgets={percent_off: 100.5}",
            "model.seller_margins.s1=0.3",
            "sweep.num_samples=3",
            "tracking.run_name=a=b",
        ],
    )
    assert cfg.model.mf.factors == 8
    assert cfg.model.mf.regularization == 0.25
    assert cfg.model.mf.use_cg is False
    assert cfg.model.mf.iterations is None  # null replaces the file's 15
    assert cfg.model.policy.budgets == {"percent_off": 100.5}
    assert cfg.model.seller_margins == {"s1": 0.3}
    assert cfg.sweep is not None and cfg.sweep.num_samples == 3 and cfg.sweep.params == {}
    assert cfg.tracking.run_name == "a=b"  # only the first '=' separates
    assert cfg.model.mf.alpha == RankerConfig().mf.alpha  # untouched values keep defaults


def test_set_float_in_exponent_form_is_a_number() -> None:
    # YAML 1.1 reads 1e-3 as text; the typed field still gets a float.
    assert load_config(None, ["model.mf.regularization=1e-3"]).model.mf.regularization == 0.001


def test_later_set_wins() -> None:
    cfg = load_config(None, ["model.mf.factors=8", "model.mf.factors=12"])
    assert cfg.model.mf.factors == 12


def test_set_without_equals_is_explained() -> None:
    message = _config_error(None, ["model.mf.factors"])
    assert "'model.mf.factors'" in message and "key.path=value" in message


def test_set_into_a_plain_value_is_explained(tmp_path: Path) -> None:
    path = _write(tmp_path, {"data": {"path": "somewhere"}})
    message = _config_error(path, ["data.path.x=1"])
    assert "'data.path' is a value, not a section" in message
    assert "data.path.x=1" in message


def test_partial_synthetic_override_keeps_the_training_default_seed() -> None:
    cfg = load_config(None, ["data.synthetic.buyers=2000"])
    assert cfg.data.synthetic.buyers == 2000
    assert cfg.data.synthetic.seed == 1  # the training default, not SyntheticConfig's 0
    assert cfg.data.path is None


def test_data_argument_overrides_the_file_and_set(tmp_path: Path) -> None:
    path = _write(tmp_path, {"data": {"path": "from-file", "margins_from_truth": False}})
    cfg = load_config(path, ["data.path=from-set"], data=Path("from-arg"))
    assert cfg.data.path == Path("from-arg")
    assert cfg.data.margins_from_truth is False  # the rest of the section is kept
    assert load_config(None, data=tmp_path).data.path == tmp_path


def test_data_argument_needs_data_to_be_a_section() -> None:
    assert "'data' must be a section" in _config_error(None, ["data=3"], data=Path("x"))


def test_every_shipped_config_loads() -> None:
    # Training configs; serve*.yaml are serve configs (tests/serving/test_config.py).
    paths = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("serve"))
    assert len(paths) >= 3
    for path in paths:
        cfg = load_config(path)
        assert isinstance(cfg, TrainConfig)
    sweep = load_config(CONFIGS / "sweep.yaml").sweep
    assert sweep is not None and "model.mf.factors" in sweep.params


@pytest.mark.parametrize("name", ["default.yaml", "sweep.yaml"])
def test_round_trip_through_plain_data(tmp_path: Path, name: str) -> None:
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw.setdefault("sweep", {}).setdefault("params", {})["model.response.learning_rate"] = {
        "uniform": [0.05, 0.2]
    }
    cfg = load_config(_write(tmp_path, raw), ["data.path=some/dir", "model.seller_margins.s1=0.4"])
    assert cfg.sweep is not None
    assert cfg.sweep.params["model.response.learning_rate"].uniform == (0.05, 0.2)
    plain = cfg.to_dict()
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # plain data all the way down
    assert TrainConfig.from_dict(plain) == cfg
    assert TrainConfig.from_dict(plain).to_dict() == plain


# --------------------------------------------------------------------------- parse/apply


@pytest.mark.parametrize(
    ("text", "parts", "value"),
    [
        ("a.b.c=1", ["a", "b", "c"], 1),
        (" a.b = 0.5 ", ["a", "b"], 0.5),
        ("x=true", ["x"], True),
        ("x=null", ["x"], None),
        ("x=~", ["x"], None),
        ("x=[1, 2]", ["x"], [1, 2]),
        ("x={a: 1}", ["x"], {"a": 1}),
        ("x='32'", ["x"], "32"),
        ("x=hello world", ["x"], "hello world"),
        ("x=", ["x"], ""),
        ("x=  ", ["x"], ""),
        ("x=a=b", ["x"], "a=b"),
    ],
)
def test_parse_override(text: str, parts: list[str], value: Any) -> None:
    assert parse_override(text) == (parts, value)


@pytest.mark.parametrize("text", ["novalue", "=3", "  =3", ""])
def test_parse_override_needs_a_key_and_equals(text: str) -> None:
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        parse_override(text)


def test_parse_override_rejects_invalid_yaml() -> None:
    with pytest.raises(ConfigError, match=r"--set 'x=\[1,': the value is not valid YAML"):
        parse_override("x=[1,")


def test_apply_overrides_creates_sections_and_does_not_mutate_the_input() -> None:
    data: dict[str, Any] = {"a": {"b": 1, "n": None}, "keep": {"k": [1]}}
    out = apply_overrides(data, ["a.c.d=2", "a.n.m=3", "top=x"])
    assert out == {"a": {"b": 1, "n": {"m": 3}, "c": {"d": 2}}, "keep": {"k": [1]}, "top": "x"}
    assert data == {"a": {"b": 1, "n": None}, "keep": {"k": [1]}}
    assert apply_overrides(data, []) == data and apply_overrides(data, []) is not data


def test_apply_overrides_names_the_value_in_the_way() -> None:
    with pytest.raises(ConfigError, match=r"'a\.b' is a value, not a section"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c.d=2"])
    with pytest.raises(ConfigError, match=r"'a' is a value, not a section"):
        apply_overrides({"a": [1]}, ["a.b=2"])


def test_apply_overrides_can_replace_a_section_by_a_value() -> None:
    assert apply_overrides({"a": {"b": 1}}, ["a=3"]) == {"a": 3}


# --------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize(
    "space",
    [
        {"choice": [1, 2]},
        {"grid": ["s", "t"]},
        {"uniform": [0.1, 0.2]},
        {"loguniform": [0.01, 1.0]},
        {"randint": [1, 5]},
    ],
)
def test_sweep_param_accepts_each_single_space(space: dict[str, Any]) -> None:
    param = SweepParam.from_dict(space)
    (name,) = space
    given = getattr(param, name)
    assert list(given) == space[name]


@pytest.mark.parametrize(
    ("space", "named"),
    [({}, "got none"), ({"choice": [1], "grid": [2]}, "got choice, grid")],
)
def test_sweep_param_needs_exactly_one_space(space: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match="give exactly one of") as info:
        SweepParam.from_dict(space)
    assert named in str(info.value)


def test_sweep_param_rejects_unknown_space() -> None:
    with pytest.raises(ConfigError, match="unknown key 'choise'"):
        SweepParam.from_dict({"choise": [1]})


def test_sweep_params_must_be_under_model() -> None:
    with pytest.raises(ConfigError, match=r"'data\.synthetic\.buyers': only model\.\* values"):
        SweepConfig.from_dict({"params": {"data.synthetic.buyers": {"choice": [10, 20]}}})


def test_sweep_param_path_must_exist_and_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        SweepConfig.from_dict({"params": {"model.mf.factorz": {"choice": [8]}}})
    message = str(info.value)
    assert "sweep param 'model.mf.factorz': unknown key 'factorz'" in message
    assert "allowed keys here: algorithm, alpha, event_weights, factors" in message
    with pytest.raises(ConfigError, match=r"sweep param 'model\.mff\.factors': unknown key 'mff'"):
        SweepConfig.from_dict({"params": {"model.mff.factors": {"choice": [8]}}})


def test_sweep_param_cannot_go_inside_a_plain_value() -> None:
    with pytest.raises(ConfigError, match="'x' is inside a plain value"):
        SweepConfig.from_dict({"params": {"model.mf.factors.x": {"choice": [8]}}})


def test_sweep_params_at_every_depth_of_the_model_are_accepted() -> None:
    sweep = SweepConfig.from_dict(
        {
            "params": {
                "model.mf.factors": {"choice": [8, 16]},
                "model.journey.model.max_iter": {"randint": [50, 150]},
                "model.mf.event_weights": {"choice": [{}]},
                "model.mf_features": {"choice": [True, False]},
            }
        }
    )
    assert len(sweep.params) == 4


def test_sweep_param_may_name_a_key_of_a_dict_valued_field() -> None:
    sweep = SweepConfig.from_dict({"params": {"model.seller_margins.s1": {"choice": [0.2, 0.4]}}})
    assert "model.seller_margins.s1" in sweep.params


# --------------------------------------------------------------------------- tracking URI


def test_tracking_uri_prefers_config_then_env_then_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    configured = load_config(None, ["tracking.tracking_uri=sqlite:///x.db"])
    assert configured.tracking_uri() == "sqlite:///x.db"
    assert TrainConfig().tracking_uri() == "http://from-env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    expected = f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"
    assert TrainConfig().tracking_uri() == expected == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # empty counts as unset
    assert TrainConfig().tracking_uri() == expected
    assert not (tmp_path / "mlruns").exists()  # asking for the URI creates nothing


def test_ray_address_prefers_config_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert TrainConfig().ray_address() is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://env:10001")
    assert TrainConfig().ray_address() == "ray://env:10001"
    assert load_config(None, ["ray.address=auto"]).ray_address() == "auto"
