"""`recsys serve` and `recsys keys`: start the ranking API, make API keys."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
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

    already = set(_descendants(os.getpid()))  # not ours to stop: running before Ray was
    with _stop_on_signals() as stopping:
        try:
            ray.init(
                address=os.environ.get("RAY_ADDRESS") or "local",
                include_dashboard=False,
                runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}},
            )
            stopping.arm()  # ray.init replaces the SIGTERM handler with a bare sys.exit
            ray_serve.start(http_options={"host": host, "port": port})
            ray_serve.run(app_builder(cfg.to_dict()), name="promo", route_prefix="/")
            typer.echo(
                f"serving on http://{host}:{port} (OpenAPI: /openapi.json); Ctrl-C or SIGTERM stops"
            )
            while True:
                time.sleep(0.5)
        except (StopRequestedError, KeyboardInterrupt):
            typer.echo("stopping")
        finally:
            left = stop_within(
                STOP_SECONDS - stopping.elapsed(),
                [("Serve", ray_serve.shutdown), ("Ray", ray.shutdown)],
                spare=already,
            )
            if left:
                typer.echo(f"stopped; ended {left} process(es) Ray left behind", err=True)


STOP_SECONDS = 9.0
"""`recsys serve` is gone this long after SIGINT or SIGTERM, Ray's processes with it."""


class StopRequestedError(BaseException):
    """SIGINT or SIGTERM arrived: unwind whatever the main thread was doing (a start-up
    that waits for the app included), then stop."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stopping:
    """The stop signals' handler: the first raises `StopRequestedError` in the main
    thread; later ones are ignored while the stop runs."""

    def __init__(self) -> None:
        self.at: float | None = None

    def elapsed(self) -> float:
        """Seconds since the first stop signal (0 without one: the app failed)."""
        return 0.0 if self.at is None else time.monotonic() - self.at

    def arm(self) -> None:
        """(Re)install the handler for SIGINT and SIGTERM."""
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.at is not None:
            return
        self.at = time.monotonic()
        raise StopRequestedError(signal.Signals(signum).name)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_Stopping]:
    """Stop on SIGINT and SIGTERM (see `_Stopping`), installed explicitly: a shell starts
    background jobs with SIGINT ignored, SIGTERM's default kills without any cleanup, and
    `ray.init` replaces SIGTERM's handler (so arm again after it)."""
    stopping = _Stopping()
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    stopping.arm()
    try:
        yield stopping
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def stop_within(
    seconds: float,
    steps: list[tuple[str, Callable[[], object]]],
    spare: frozenset[int] | set[int] = frozenset(),
) -> int:
    """Run the stop `steps` (Serve's shutdown, then Ray's), each given what is left of
    `seconds`, then end every process this one started, but those in `spare` (running
    before), that is still running (Ray's dashboard and runtime-env agents outlive a
    killed driver otherwise); how many had to be ended.

    A step that overruns is left behind in a daemon thread: a terminal's Ctrl-C reaches
    Ray's processes too, and Serve's shutdown then waits on a cluster that is gone.
    """
    deadline = time.monotonic() + max(seconds, 2.0)
    started = set(_descendants(os.getpid())) - spare
    for position, (name, step) in enumerate(steps):
        # What is left, less 1.5 s to end processes, shared so that a hung step leaves
        # the next one a third of it (Serve's graceful stop gets most; Ray's takes ~1 s).
        left = deadline - time.monotonic() - 1.5
        budget = left if position == len(steps) - 1 else left * 2 / 3
        if budget <= 0:
            typer.echo(f"skipping {name}'s shutdown: out of time", err=True)
            continue
        done = threading.Event()

        def run(
            step: Callable[[], object] = step, done: threading.Event = done, name: str = name
        ) -> None:
            try:
                step()
            except Exception as exc:  # the cluster may be gone already
                typer.echo(f"{name} shutdown: {exc!r}", err=True)
            finally:
                done.set()

        threading.Thread(target=run, name=f"stop-{name}", daemon=True).start()
        if not done.wait(budget):
            typer.echo(f"{name} did not stop within {budget:.1f} s; ending its processes", err=True)
    return _end_processes(started | (set(_descendants(os.getpid())) - spare), deadline)


def _end_processes(pids: set[int], deadline: float) -> int:
    """SIGTERM then, before `deadline`, SIGKILL every one of `pids` still running."""
    alive = {p for p in pids if _running(p)}
    ended = len(alive)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        wait_until = min(deadline, time.monotonic() + 1.0) if sig == signal.SIGTERM else deadline
        while alive and time.monotonic() < wait_until:
            time.sleep(0.05)
            _reap(pids)
            alive = {p for p in alive if _running(p)}
        if not alive:
            break
    _reap(pids)
    return ended


def _descendants(root: int) -> list[int]:
    """Every process below `root` (Linux /proc; elsewhere none)."""
    children: dict[int, list[int]] = {}
    for entry in _proc_entries():
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _proc_entries() -> list[str]:
    try:
        return [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (finished, waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state not in ("Z", "X")


def _reap(pids: set[int]) -> None:
    """Collect those of `pids` that are this process's finished children, so none lingers
    as a zombie (others are their own parents' to collect)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


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
