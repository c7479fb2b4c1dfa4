"""The one base-class flow every model follows.

* the public `fit` calls the subclass's `_fit` and returns ``self`` (so calls chain);
* fitted state lives in attributes with a trailing underscore (``item_factors_``);
* using a model before `fit` raises `NotFittedError`, naming the class and the fix;
* a model is built from a typed config (`StrictConfig`) and gives it back:
  ``type(m).from_config(m.get_config())`` builds an identical unfitted model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, Self, TypeVar

from recsys.config import StrictConfig

ConfigT = TypeVar("ConfigT", bound=StrictConfig)


class NotFittedError(RuntimeError):
    """A model was used before it was fitted (or loaded)."""


class CannotFitError(ValueError):
    """The data cannot support fitting a model; the message says why and what would.

    Models that can degrade (the journey's purchase model, matrix factorization) catch it
    and record the reason as skipped; it reaches a caller only from a model that must
    fit, and the training command reports it in one line.
    """


class Estimator(ABC, Generic[ConfigT]):
    """Abstract base of every model: typed config in, `fit` -> `_fit`, fitted-state check.

    Subclasses set `config_class` and implement `_fit`; they may override `fit` only to
    give it a precise signature, delegating to ``super().fit(...)``.
    """

    config_class: type[ConfigT]
    """The pydantic config model of this estimator."""

    def __init__(self, config: ConfigT | None = None) -> None:
        if config is not None and not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(config).__name__}; use {type(self).__name__}.from_config(...) "
                "to build one from a mapping"
            )
        self.config: ConfigT = config if config is not None else self.config_class()
        self._fitted = False

    @classmethod
    def from_config(cls, config: ConfigT | Mapping[str, Any]) -> Self:
        """Build an unfitted estimator from a config object or its plain-dict form."""
        if isinstance(config, Mapping):
            config = cls.config_class.from_dict(dict(config), source=cls.__name__)
        return cls(config)

    def get_config(self) -> ConfigT:
        """A copy of this estimator's config (changing it does not change the estimator)."""
        return self.config.model_copy(deep=True)

    def fit(self, *args: Any, **kwargs: Any) -> Self:
        """Fit on the given data (see the subclass's `_fit`) and return ``self``."""
        self._fitted = False
        self._fit(*args, **kwargs)
        self._fitted = True
        return self

    @abstractmethod
    def _fit(self, *args: Any, **kwargs: Any) -> None:
        """Learn the fitted state (trailing-underscore attributes) from the data."""

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def check_is_fitted(self, method: str | None = None) -> None:
        """Raise `NotFittedError` unless the estimator has been fitted or loaded."""
        if not self._fitted:
            name = type(self).__name__
            using = f" before calling {method}()" if method else ""
            raise NotFittedError(
                f"This {name} instance is not fitted yet: call fit(...) (or load a saved "
                f"model){using}."
            )
