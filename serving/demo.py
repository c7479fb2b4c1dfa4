"""The demo's serving step: the ranking API on loopback, called over HTTP with demo keys.

`serve_step` runs after the training step has registered the champion in the demo's
MLflow store. It

1. makes a demo admin key and a demo seller key, writes the serve config the demo uses
   (`<demo>/serve.yaml`: the demo's store, its decision log, the keys' hashes, and
   `as_of` at the last synthetic campaign, whose offers have ended by the real clock)
   and the raw keys (`<demo>/demo-keys.env`, readable by the owner only);
2. starts Ray Serve on 127.0.0.1 on a free port with that config;
3. makes real HTTP calls (`tour`) and prints what they answer: a known buyer ranked, an
   unknown one (cold start), an outcome, a seller's campaigns, a 403 for another
   seller's, the decision log on disk;
4. stops Serve and Ray, whatever happened, and prints the command that serves the same
   API again with the same keys.

`tour` takes any `httpx.Client`, so tests drive it through FastAPI's test client with
no Ray at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import yaml

from serving.auth import ADMIN, ApiKeyEntry, generate_key, hash_key
from serving.config import ServeConfig

Echo = Callable[[str], None]

CONFIG_FILE = "serve.yaml"
"""The serve config the demo writes into its directory and serves."""

KEYS_FILE = "demo-keys.env"
"""The demo's raw API keys (`NAME=value` lines, mode 0600) for calling the API later."""

DECISION_LOG = "decision_log"
UNKNOWN_BUYER = "new-buyer-0001"
BATCH_BUYERS = 20
"""Known buyers ranked in one /v1/rank/batch call, to pick one worth showing."""

TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoKeys:
    """The demo's two API keys: an admin key (all sellers) and one seller's key."""

    admin: str
    seller: str
    seller_id: str

    @classmethod
    def new(cls, seller_id: str) -> DemoKeys:
        return cls(admin=generate_key(), seller=generate_key(), seller_id=seller_id)

    def entries(self) -> list[ApiKeyEntry]:
        """The keys as the serve config stores them (hashes only)."""
        return [
            ApiKeyEntry(key_hash=hash_key(self.admin), seller_id=ADMIN),
            ApiKeyEntry(key_hash=hash_key(self.seller), seller_id=self.seller_id),
        ]

    def env_lines(self) -> str:
        """The keys file's text: shell-sourceable `NAME=value` lines."""
        return (
            "# promo-recsys demo API keys, made by `recsys demo`: secret, do not share.\n"
            "# The demo's serve config holds only their hashes. Use: . ./demo-keys.env\n"
            f"DEMO_ADMIN_KEY={self.admin}\n"
            f"DEMO_SELLER_KEY={self.seller}\n"
            f"DEMO_SELLER_ID={self.seller_id}\n"
        )


@dataclass(frozen=True)
class Market:
    """What the demo needs to know of its synthetic marketplace."""

    as_of: datetime
    sellers: list[str]
    """Sellers with offers valid at `as_of`, sorted."""
    buyers: list[str]
    """Buyers with a purchase in the history, sorted."""


def read_market(data_dir: Path) -> Market:
    """The moment to decide at (an hour into the last campaign) and who is in it."""
    offers = pl.read_parquet(data_dir / "offers.parquet", columns=["seller_id", "start_ts"])
    start = offers["start_ts"].max()
    if not isinstance(start, datetime):
        raise ValueError(f"{data_dir / 'offers.parquet'} has no offers to serve")
    sellers = offers.filter(pl.col("start_ts") == start)["seller_id"].drop_nulls().unique()
    events = pl.scan_parquet(data_dir / "events.parquet")
    buyers = (
        events.filter(pl.col("event_type") == "purchase")
        .select(pl.col("buyer_id").unique().sort())
        .collect()["buyer_id"]
    )
    return Market(
        as_of=start + timedelta(hours=1),
        sellers=sorted(sellers.to_list()),
        buyers=buyers.to_list(),
    )


def demo_config(out: Path, tracking_uri: str, keys: DemoKeys, as_of: datetime) -> ServeConfig:
    """The serve config of the demo: its store, its decision log, its keys (hashed)."""
    return ServeConfig(
        tracking_uri=tracking_uri,
        decision_log_dir=(out / DECISION_LOG).resolve(),
        api_keys=keys.entries(),
        as_of=as_of,
        poll_seconds=10.0,
    )


def write_demo_files(out: Path, config: ServeConfig, keys: DemoKeys) -> tuple[Path, Path]:
    """Write `<out>/serve.yaml` and `<out>/demo-keys.env` (mode 0600); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / CONFIG_FILE
    config_path.write_text(
        "# Written by `recsys demo`: the demo's serve config (see configs/serve.yaml).\n"
        "# as_of is the last synthetic campaign, whose offers have ended by the real clock.\n"
        + yaml.safe_dump(config.to_dict(), sort_keys=False)
    )
    keys_path = out / KEYS_FILE
    fd = os.open(keys_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode otherwise
        handle.write(keys.env_lines())
    return config_path, keys_path


# --------------------------------------------------------------------------- the HTTP tour


def tour(
    http: httpx.Client,
    keys: DemoKeys,
    market: Market,
    log_dir: Path,
    echo: Echo,
    wait_for_log_s: float = 15.0,
) -> None:
    """Call every endpoint the way a client would, printing short readable answers."""
    admin, seller = _auth(keys.admin), _auth(keys.seller)
    ready = http.get("/readyz").json()
    echo(f"GET /readyz: {ready['status']}, model version {ready['model_version']}")

    sample = market.buyers[:BATCH_BUYERS]
    batch = _call(
        http, "POST", "/v1/rank/batch", admin, {"requests": [{"buyer_id": b} for b in sample]}
    )
    answers = batch.json()["responses"]
    offered = [a for a in answers if a["offers"]]
    echo(
        f"POST /v1/rank/batch, {len(sample)} known buyers in one call (admin key): "
        f"{len(offered)} get an offer, {len(answers) - len(offered)} nothing "
        f"({_elapsed(batch)})"
    )
    # The first buyer with the most offers: the most to show.
    buyer = sample[max(range(len(answers)), key=lambda i: len(answers[i]["offers"]))]

    ranked = _call(http, "POST", "/v1/rank", admin, {"buyer_id": buyer, "k": 3})
    echo(f"\nPOST /v1/rank {{buyer_id: {buyer}, k: 3}} (admin key, {_elapsed(ranked)})")
    echo(_format_rank(ranked.json()))

    cold = _call(http, "POST", "/v1/rank", admin, {"buyer_id": UNKNOWN_BUYER, "k": 3})
    echo(f"\nPOST /v1/rank {{buyer_id: {UNKNOWN_BUYER}}}, a buyer the model has never seen")
    echo(_format_rank(cold.json()))

    decision = ranked.json()
    outcome: dict[str, Any] = {"decision_id": decision["decision_id"], "type": "purchase"}
    if decision["offers"]:
        outcome = {
            "decision_id": decision["decision_id"],
            "type": "redemption",
            "offer_id": decision["offers"][0]["offer_id"],
            "amount": 42.0,
        }
    done = _call(http, "POST", "/v1/outcomes", admin, {"outcomes": [outcome]}).json()
    echo(
        f"\nPOST /v1/outcomes: {buyer} {outcome['type']} of "
        f"{outcome.get('offer_id', 'no offer')} (decision {decision['decision_id']}): "
        f"{done['accepted']} accepted"
    )

    own = f"/v1/sellers/{keys.seller_id}/campaigns"
    plan = _call(http, "GET", own, seller).json()
    echo(f"\nGET {own} (seller {keys.seller_id}'s key)")
    echo(_format_campaigns(plan))
    if plan["spend"] > 0:
        budget = round(plan["spend"] / 3, 2)
        tight = _call(http, "GET", f"{own}?budget={budget}", seller).json()
        echo(f"GET {own}?budget={budget}")
        echo(_format_campaigns(tight))
    echo(_seller_page(http, keys, plan, log_dir.parent))

    others = [s for s in market.sellers if s != keys.seller_id]
    if others:
        path = f"/v1/sellers/{others[0]}/campaigns"
        refused = http.get(path, headers=seller, timeout=TIMEOUT_S)
        echo(f"GET {path} (seller {keys.seller_id}'s key): {refused.status_code}")
        echo(f"   {refused.json()['detail']}")
    anonymous = http.post("/v1/rank", json={"buyer_id": buyer}, timeout=TIMEOUT_S)
    echo(f"POST /v1/rank without a key: {anonymous.status_code}")

    echo("\n" + _await_log(log_dir, decision["decision_id"], wait_for_log_s))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _call(
    http: httpx.Client, method: str, path: str, headers: dict[str, str], body: Any = None
) -> httpx.Response:
    """One request that must succeed; an error names the call and the API's answer."""
    response = http.request(method, path, headers=headers, json=body, timeout=TIMEOUT_S)
    if response.status_code != 200:
        raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text}")
    return response


def _elapsed(response: httpx.Response) -> str:
    try:
        return f"{response.elapsed.total_seconds() * 1000:.0f} ms"
    except RuntimeError:  # a test client's response may not time itself
        return "timed by the client"


def _format_rank(body: dict[str, Any]) -> str:
    info = body["buyer"]
    stage = info["journey_stage"] or "unknown"
    lines = [
        f"   model version {body['model_version']}, journey stage {stage}, "
        f"cold start {'yes' if info['cold_start'] else 'no'}, decision {body['decision_id']}"
        + (" (exploration)" if body["explored"] else "")
    ]
    for position, offer in enumerate(body["offers"], start=1):
        p_redeem = "n/a" if offer["p_redeem"] is None else f"{offer['p_redeem']:.3f}"
        lines.append(
            f"   #{position} {offer['offer_id']} {offer['tool']:<13} seller "
            f"{offer['seller_id'] or '(platform)'}  expected profit "
            f"{offer['expected_value']:+.3f}  P(redeem) {p_redeem}  "
            f"propensity {_probability(offer['propensity'])}"
        )
        lines.append(f"      {'; '.join(offer['reasons'][:2])}")
    if not body["offers"]:
        lines.append(f"   no offer: {body['no_offer_reason']}")
    return "\n".join(lines)


def _probability(p: float) -> str:
    """A propensity; the API's stand-in for 0 (the smallest float) reads as such."""
    return f"{p:.3f}" if p >= 0.0005 else "~0 (never first)"


def _format_campaigns(body: dict[str, Any]) -> str:
    campaigns = body["campaigns"]
    budget = "no budget limit" if body["budget"] is None else f"budget {body['budget']:,.2f}"
    lines = [
        f"   {len(campaigns)} recommended campaigns ({budget}, spend {body['spend']:,.2f}, "
        f"model version {body['model_version']})"
    ]
    for c in campaigns[:4]:
        lines.append(
            f"   {c['audience']:<16} x {c['offer_id']} {c['tool']:<13} {c['buyers']:>5,} of "
            f"{c['audience_size']:,} buyers, expected profit {c['profit']:+,.1f} "
            f"({c['profit_low']:+,.1f} to {c['profit_high']:+,.1f}), spend {c['spend']:,.2f}"
        )
    if len(campaigns) > 4:
        lines.append(f"   ... and {len(campaigns) - 4} more")
    plan = next(o for o in body["comparison"] if o["kind"] == "plan")
    blankets = [o for o in body["comparison"] if o["kind"] == "coupon_to_all"]
    if blankets:
        best = max(blankets, key=lambda o: o["profit"])
        worst = min(blankets, key=lambda o: o["profit"])
        lines.append(
            f"   the plan: expected profit {plan['profit']:+,.1f}; coupon to every customer: "
            f"from {worst['profit']:+,.1f} ({worst['offer_id']}, {worst['tool']}) to "
            f"{best['profit']:+,.1f} ({best['offer_id']}, {best['tool']}); no campaign: 0"
        )
    return "\n".join(lines)


def _seller_page(http: httpx.Client, keys: DemoKeys, plan: dict[str, Any], out_dir: Path) -> str:
    """Sign in to the seller page as a browser would, and save a campaign's CSV."""
    page_path = f"/sellers/{keys.seller_id}"
    http.cookies.clear()
    login = http.post(
        f"{page_path}/login",
        data={"key": keys.seller},
        follow_redirects=False,
        timeout=TIMEOUT_S,
    )
    page = http.get(page_path, timeout=TIMEOUT_S)
    http.cookies.clear()
    lines = [
        f"\nseller page {http.base_url}{page_path}: sign-in {login.status_code}, "
        f"page {page.status_code} ({len(page.text):,} bytes, no external scripts)"
    ]
    if plan["campaigns"]:
        campaign = plan["campaigns"][0]["campaign_id"]
        path = f"/v1/sellers/{keys.seller_id}/campaigns/{campaign}/targets.csv"
        csv = _call(http, "GET", path, _auth(keys.seller))
        saved = out_dir / f"targets-{keys.seller_id}-{campaign}.csv"
        saved.write_text(csv.text)
        rows = max(len(csv.text.splitlines()) - 1, 0)
        lines.append(f"GET {path}: {rows} buyer-offer pairs saved to {saved}")
    return "\n".join(lines)


def _await_log(log_dir: Path, decision_id: str, wait_s: float) -> str:
    """Where the decision log is, once the tour's decision and outcome are on disk."""
    from serving.decision_log import read_log

    deadline = time.monotonic() + wait_s
    while True:
        tables = read_log(log_dir)
        exposures, redemptions = tables["exposures"], tables["redemptions"]
        written = decision_id in exposures["exposure_id"].to_list() and redemptions.height
        if written or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    status = "" if written else " (the last rows were not written yet)"
    return (
        f"decision log{status}, in the data contract's form (Parquet parts):\n"
        f"   {log_dir / 'exposures'}/: {_count(exposures.height, 'decision')}\n"
        f"   {log_dir / 'redemptions'}/: {_count(redemptions.height, 'outcome')}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --------------------------------------------------------------------------- the step


def serve_step(out: Path, echo: Echo, tracking_uri: str) -> None:
    """Serve the demo's champion on loopback, call it over HTTP, stop (see module doc).

    Runs on the Ray this process already has (the demo's training step leaves its local
    Ray running), else starts a local one; stops Serve and Ray at the end either way, as
    the demo's last step on Ray. The demo's previous decision log is cleared first.
    """
    market = read_market(out / "data")
    if not market.sellers:
        raise ValueError(f"the last campaign in {out / 'data'} has no seller offers to serve")
    keys = DemoKeys.new(market.sellers[0])
    config = demo_config(out, tracking_uri, keys, market.as_of)
    config_path, keys_path = write_demo_files(out, config, keys)
    shutil.rmtree(config.decision_log_dir, ignore_errors=True)  # a previous demo's
    echo(
        f"serve config: {config_path} (decides as of {market.as_of:%Y-%m-%d %H:%M} UTC, "
        "the last synthetic campaign)"
    )

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray
    from ray import serve

    from serving.app import app_builder

    port = _free_port()
    began = time.perf_counter()
    with _quiet_serve_logs():
        if not ray.is_initialized():  # else the demo's Ray, left running by the training step
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
            )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(app_builder(config.to_dict()), name="promo-demo", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            echo(f"Ray Serve up on {url} in {time.perf_counter() - began:.1f}s\n")
            with httpx.Client(base_url=url) as http:
                tour(http, keys, market, Path(config.decision_log_dir), echo)
        finally:
            echo("\nstopping Ray Serve and Ray (Ray may report killing its Serve controller)")
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    echo(next_steps(config_path, keys_path, keys, market.buyers[0]))


def next_steps(config_path: Path, keys_path: Path, keys: DemoKeys, buyer: str) -> str:
    """The demo keys and the commands that serve and call the same API again."""
    return (
        f"demo API keys (also in {keys_path}, readable by you only; the serve config "
        "holds their hashes):\n"
        f"  admin (all sellers): {keys.admin}\n"
        f"  seller {keys.seller_id}:         {keys.seller}\n"
        "serve the same API again with these keys, then call it:\n"
        f"  uv run recsys serve --config {config_path} --port 8000\n"
        f'  . {keys_path} && curl -s -H "Authorization: Bearer $DEMO_SELLER_KEY" '
        "-H 'content-type: application/json' \\\n"
        f'      -d \'{{"buyer_id": "{buyer}", "k": 3}}\' http://127.0.0.1:8000/v1/rank\n'
        f"and open the seller page, signing in with seller {keys.seller_id}'s key:\n"
        f"  http://127.0.0.1:8000/sellers/{keys.seller_id}"
    )


@contextmanager
def _quiet_serve_logs() -> Iterator[None]:
    """Serve's own progress lines would bury the demo's; its warnings still show."""
    serve_logger = logging.getLogger("ray.serve")
    level = serve_logger.level
    serve_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        serve_logger.setLevel(level)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
