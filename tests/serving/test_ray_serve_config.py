"""configs/deploy/ray-serve.yaml, the Ray Serve config file for `serve deploy`: Ray accepts
it, its import path is our application builder, and its args are a valid serve config that
mirrors configs/serve.yaml. No Ray cluster is started.

It lives in a subdirectory because configs/*.yaml are training configs and
configs/serve*.yaml serve configs, as the shipped-config tests load them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from serving.app import app_builder
from serving.auth import ENV_VAR, hash_key
from serving.config import BatchingConfig, ServeConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEPLOY = CONFIGS / "deploy" / "ray-serve.yaml"


def _raw() -> dict[str, Any]:
    data = yaml.safe_load(DEPLOY.read_text())
    assert isinstance(data, dict)
    return data


def _application() -> ServeApplicationSchema:
    schema = ServeDeploySchema.model_validate(_raw())
    assert len(schema.applications) == 1
    return schema.applications[0]


def test_ray_accepts_the_file_and_every_key_is_one_it_knows() -> None:
    data = _raw()
    # ServeDeploySchema ignores unknown keys (forward compatibility), so a typo would be
    # silently dropped: check the keys ourselves.
    assert set(data) <= set(ServeDeploySchema.model_fields)
    for app in data["applications"]:
        assert set(app) <= set(ServeApplicationSchema.model_fields)
    app = _application()
    assert app.name == "promo" and app.route_prefix == "/"
    assert app.runtime_env["env_vars"]["OPENBLAS_NUM_THREADS"] == "1"


def test_import_path_resolves_to_the_application_builder() -> None:
    from ray._common.utils import import_attr  # what `serve run`/`serve deploy` use

    assert import_attr(_application().import_path) is app_builder


def test_args_are_the_serve_config_of_configs_serve_yaml() -> None:
    args = _application().args
    config = ServeConfig.from_dict(args, source=str(DEPLOY))
    assert config == ServeConfig.from_yaml(CONFIGS / "serve.yaml")
    assert set(yaml.safe_load((CONFIGS / "serve.yaml").read_text())) <= set(args)


def test_serve_builds_the_application_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder is called as Serve calls it (args dict in, Application out); raw keys
    of RECSYS_API_KEYS reach the replicas' args as hashes only."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    key = "deploy-test-key-0123456789"
    monkeypatch.setenv(ENV_VAR, f"{key}:s001")
    app = call_user_app_builder_with_args_if_necessary(app_builder, _application().args)
    assert isinstance(app, Application)
    bound = str(app._bound_deployment.init_args)
    assert hash_key(key) in bound and key not in bound


def test_the_files_example_of_live_batching_is_one_serve_accepts() -> None:
    """The commented `deployments:` block (batching changed on live replicas) is valid as
    written, for the deployment `app_builder` names, with keys `reconfigure` takes."""
    from serving.deployment import DEPLOYMENT_NAME

    lines = DEPLOY.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# deployments:")
    block = [line.replace("# ", "", 1) for line in lines[start:] if line.strip()]
    assert all(
        line.lstrip().startswith(("deployments", "-", "user_config", "max_")) for line in block
    )
    example = yaml.safe_load("\n".join(block))
    data = _raw()
    data["applications"][0].update(example)
    app = ServeDeploySchema.model_validate(data).applications[0]
    (override,) = app.deployments
    assert override.name == DEPLOYMENT_NAME
    batching = BatchingConfig.from_dict(override.user_config)
    assert override.max_ongoing_requests >= batching.max_batch_size
