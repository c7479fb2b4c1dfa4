"""The API listens on loopback unless told otherwise, at every place that starts HTTP.

- `recsys serve`: `--host` defaults to 127.0.0.1; another host must be given on the
  command line, and is warned about, naming the risk.
- the demo's serving step: 127.0.0.1.
- Ray Serve itself: `serve.start()` without a host binds loopback, but a Serve config
  file without `http_options.host` binds 0.0.0.0, so the checked-in cluster file names
  its host (0.0.0.0, for a cluster's load balancer) explicitly.
- every other call in this repository that starts an HTTP server (`serve.start`,
  `uvicorn.run`, `HTTPOptions`) names a loopback host, found by reading the source, so
  a new entry point is checked too.

Nothing here starts Ray: `ray.init` and Serve's calls are replaced by recorders.
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import make_app
from serving import demo
from serving.auth import ENV_VAR, hash_key
from serving.cli import DEFAULT_HOST, exposure_warning, is_loopback

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("serving", "training", "recsys", "cli", "benchmarks")
KEY = "bind-test-key-0123456789abcdefghijkl"


class StopError(Exception):
    """Ends a start-up recorded by `fake_ray` once Serve has been told where to listen."""


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`ray.init` and Serve's start, run and shutdown record their arguments instead."""
    import ray
    from ray import serve

    seen: dict[str, Any] = {"calls": []}

    def record(name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen["calls"].append(name)
            seen[name] = (args, kwargs)
            return result

        return call

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", record("ray.init"))
    monkeypatch.setattr(ray, "shutdown", record("ray.shutdown"))
    monkeypatch.setattr(serve, "start", record("serve.start"))
    monkeypatch.setattr(serve, "run", record("serve.run"))
    monkeypatch.setattr(serve, "shutdown", record("serve.shutdown"))
    return seen


def listen_host(seen: dict[str, Any]) -> str:
    _, kwargs = seen["serve.start"]
    host = kwargs["http_options"]["host"]
    assert isinstance(host, str)
    return host


def run_serve(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """`recsys serve ARGS` until it would wait for Ctrl-C (which it is then sent)."""

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    return CliRunner().invoke(make_app(), ["serve", *args])


def test_recsys_serve_listens_on_loopback_by_default(
    fake_ray: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, f"{KEY}:s001")
    result = run_serve(monkeypatch)
    assert result.exit_code == 0, result.output
    assert listen_host(fake_ray) == DEFAULT_HOST == "127.0.0.1"
    assert fake_ray["calls"] == [
        "ray.init",
        "serve.start",
        "serve.run",
        "serve.shutdown",
        "ray.shutdown",
    ]
    assert "serving on http://127.0.0.1:8000" in result.output
    assert "listens beyond" not in result.output
    # The application it runs carries the key's hash, never the key.
    (app, *_), _ = fake_ray["serve.run"]
    bound = str(app._bound_deployment.init_args)
    assert hash_key(KEY) in bound and KEY not in bound


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "promo.example.com"])
def test_another_host_must_be_asked_for_and_is_warned_about(
    fake_ray: dict[str, Any], monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    result = run_serve(monkeypatch, "--host", host, "--port", "8123")
    assert result.exit_code == 0, result.output
    assert listen_host(fake_ray) == host
    warning = result.stderr
    assert f"--host {host} listens beyond this machine" in warning
    assert "port 8123" in warning and "plain HTTP" in warning and "firewall" in warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_not_warned_about(
    fake_ray: dict[str, Any], monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    assert is_loopback(host) and exposure_warning(host, 8000) is None
    result = run_serve(monkeypatch, "--host", host)
    assert result.exit_code == 0, result.output
    assert listen_host(fake_ray) == host
    assert "listens beyond" not in result.output


def test_the_demo_serves_on_loopback(
    fake_ray: dict[str, Any], market_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray import serve

    def stop(*args: Any, **kwargs: Any) -> None:
        raise StopError

    monkeypatch.setattr(serve, "run", stop)  # the demo's HTTP tour is not needed here
    (tmp_path / "data").symlink_to(market_data, target_is_directory=True)
    with pytest.raises(StopError):
        demo.serve_step(tmp_path, lambda line: None, tracking_uri="sqlite:////nowhere/m.db")
    assert listen_host(fake_ray) == "127.0.0.1"
    assert fake_ray["ray.init"][1]["include_dashboard"] is False
    assert fake_ray["calls"] == ["ray.init", "serve.start", "serve.shutdown", "ray.shutdown"]


def test_ray_serves_own_default_is_loopback_but_a_config_files_is_not() -> None:
    """Why the cluster file names its host: Serve's config-file schema defaults to all
    interfaces, while `serve.start()` defaults to loopback."""
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import HTTPOptionsSchema

    if os.environ.get("RAY_SERVE_DEFAULT_HTTP_HOST"):
        pytest.skip("RAY_SERVE_DEFAULT_HTTP_HOST changes Serve's default host")
    assert is_loopback(HTTPOptions().host or "")
    assert not is_loopback(HTTPOptionsSchema().host)


def test_the_cluster_file_asks_for_its_host_explicitly() -> None:
    deploy = yaml.safe_load((ROOT / "configs" / "deploy" / "ray-serve.yaml").read_text())
    assert "host" in deploy["http_options"], "name the host: a file without one binds 0.0.0.0"
    assert deploy["http_options"]["host"] == "0.0.0.0"  # a cluster's proxies, on every node


def _http_starts(tree: ast.AST) -> list[ast.Call]:
    """Calls that start an HTTP server: `*.start(http_options=...)`, `uvicorn.run(...)`,
    `HTTPOptions(...)`."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func, "value", None)
        owner_name = getattr(owner, "id", "")
        keywords = {k.arg for k in node.keywords}
        if (
            (name == "start" and "http_options" in keywords)
            or (name == "run" and owner_name == "uvicorn")
            or name == "HTTPOptions"
        ):
            found.append(node)
    return found


def _host_of(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "host":
            return keyword.value
        if keyword.arg == "http_options" and isinstance(keyword.value, ast.Dict):
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "host":
                    return value
    return None


def test_every_http_server_in_the_code_names_a_loopback_host() -> None:
    """Each start names its host: a loopback literal, or `recsys serve`'s `--host`
    option (whose default the tests above check)."""
    starts: list[str] = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for call in _http_starts(tree):
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                starts.append(where)
                host = _host_of(call)
                assert host is not None, f"{where} starts HTTP without naming its host"
                if isinstance(host, ast.Constant):
                    assert is_loopback(str(host.value)), f"{where} listens on {host.value}"
                else:
                    assert path == ROOT / "serving" / "cli.py", f"{where}: host not a literal"
                    assert isinstance(host, ast.Name) and host.id == "host"
    assert any(s.startswith("serving/cli.py") for s in starts)
    assert any(s.startswith("serving/demo.py") for s in starts)
    assert any(s.startswith("benchmarks/") for s in starts)
