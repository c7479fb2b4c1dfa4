"""Where the served model comes from: a registry alias (followed) or a directory (fixed).

`current_version()` is a cheap poll (one registry call); `load(version)` downloads and
reads a version. The deployment polls, loads in the background, and swaps only after a
successful load, so a broken new champion never replaces a working model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from recsys.locations import default_tracking_uri, ranker_dir
from recsys.models.ranker import PromoRanker


class ModelSource:
    """A model reference: `models:/name@alias`, `models:/name/version`, or a directory."""

    def __init__(self, uri: str, tracking_uri: str | None = None) -> None:
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.registry = uri.startswith("models:/")

    def _client(self):  # type: ignore[no-untyped-def]
        import mlflow
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
        mlflow.set_tracking_uri(uri)
        return MlflowClient(tracking_uri=uri)

    def current_version(self) -> str:
        """The version the reference points at now ("dir" for a directory)."""
        if not self.registry:
            return "dir:" + str(Path(self.uri).resolve())
        name, _, ref = self.uri.removeprefix("models:/").partition("@")
        client = self._client()
        if ref:
            return str(client.get_model_version_by_alias(name, ref).version)
        name, _, version = self.uri.removeprefix("models:/").partition("/")
        return version

    def load(self, version: str) -> PromoRanker:
        """Read the given version (as returned by `current_version`)."""
        if not self.registry:
            return PromoRanker.load(self.uri)
        import mlflow

        self._client()
        name = self.uri.removeprefix("models:/").partition("@")[0].partition("/")[0]
        with tempfile.TemporaryDirectory(prefix="promo-serve-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
            return PromoRanker.load(ranker_dir(local))
