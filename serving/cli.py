"""`recsys serve` and `recsys keys`: start the ranking API, make API keys."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


DEFAULT_HOST = "127.0.0.1"
"""`recsys serve` listens on loopback unless `--host` says otherwise."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    Examples
    --------
    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5")]
    [True, True, True, False, False]
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning `recsys serve` prints for a host beyond loopback (None for loopback)."""
    if is_loopback(host):
        return None
    return (
        f"warning: --host {host} listens beyond this machine: anyone who can reach port "
        f"{port} on it can call the API (and try keys against it), over plain HTTP, so keys "
        "and answers cross the network unencrypted. Put it behind a firewall and a TLS "
        f"proxy, or leave --host at its default, {DEFAULT_HOST}."
    )


def serve(
    config: Annotated[
        Path | None, typer.Option(help="serve config YAML (see configs/serve.yaml)")
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help="address to listen on; the default keeps the API on this machine, any "
            "other (e.g. 0.0.0.0) exposes it to the network"
        ),
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Start the ranking API on Ray Serve (local Ray, or RAY_ADDRESS); Ctrl-C stops it."""
    from recsys.config import ConfigError
    from serving.config import ServeConfig

    try:
        cfg = ServeConfig.from_yaml(config) if config else ServeConfig()
        from serving.app import keyring_from

        keys = keyring_from(cfg)
    except (ConfigError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if len(keys) == 0:
        typer.echo("warning: no API keys configured; every request will get 401")
    exposed = exposure_warning(host, port)
    if exposed is not None:
        typer.secho(exposed, fg=typer.colors.YELLOW, err=True)
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray import serve as ray_serve

    from serving.app import app_builder

    ray.init(
        address=os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}},
    )
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        ray_serve.run(app_builder(cfg.to_dict()), name="promo", route_prefix="/")
        typer.echo(f"serving on http://{host}:{port} (OpenAPI: /openapi.json); Ctrl-C stops")
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        ray_serve.shutdown()
        ray.shutdown()


def keys_new(
    seller: Annotated[str, typer.Argument(help="the seller_id the key belongs to, or * (admin)")],
) -> None:
    """Make a new API key: prints the key (give it to the caller) and its hashed config entry."""
    from serving.auth import generate_key, hash_key

    key = generate_key()
    typer.echo(f"key (shown once): {key}")
    typer.echo(f"serve config entry:\n  - key_hash: {hash_key(key)}\n    seller_id: '{seller}'")


def add_serving_commands(app: typer.Typer) -> None:
    app.command("serve")(serve)
    keys = typer.Typer(help="API keys of the ranking API.", no_args_is_help=True)
    keys.command("new")(keys_new)
    app.add_typer(keys, name="keys")
