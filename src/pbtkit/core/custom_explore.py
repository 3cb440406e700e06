"""Your own explore function as an explorer: :class:`CustomExplore`.

The function is named by its import path in a spec (``{"type": "custom", "target":
"module:qualname"}``) and imported only when first called, under the import policy in
force (:mod:`pbtkit._target`), so reading a stored spec never runs the code it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import check_keys
from pbtkit.core.explore import Explorer
from pbtkit.core.space import SearchSpace

__all__ = ["CustomExplore", "ExploreFunction"]


ExploreFunction = Callable[[Mapping[str, Any], SearchSpace, np.random.Generator], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class CustomExplore(Explorer):
    """A user's explore function, checked against the space after every call.

    Built from a spec (``{"type": "custom", "target": "module:qualname"}``) it holds only
    the target: the function is imported when it is first called, and only if the import
    policy in force allows it (see :mod:`pbtkit._target`), so reading a stored spec to
    show it never runs code.

    Args:
        fn: ``fn(hparams, space, rng) -> mapping`` of new hyperparameters; None to import
            it from ``target`` when needed.
        target: The function's import path ``"module:qualname"``, written by
            :meth:`to_dict` so a config can name it. Defaults to the path of ``fn``.

    Raises:
        ConfigError: ``fn`` is not callable, or ``target`` is not ``"module:qualname"``
            (or missing when ``fn`` is None).
    """

    kind: ClassVar[str] = "custom"

    fn: ExploreFunction | None = field(default=None, compare=False)
    target: str = field(default="")

    def __post_init__(self) -> None:
        if self.fn is not None and not callable(self.fn):
            raise ConfigError(
                f"CustomExplore(fn={self.fn!r}): fn must be a function "
                f"fn(hparams, space, rng) -> dict"
            )
        target = self.target or (
            ""
            if self.fn is None
            else f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', '?')}"
        )
        if not _is_target(target):
            raise ConfigError(
                f"CustomExplore(target={target!r}): target must be an import path "
                f"'module:qualname', e.g. 'mypkg.search:explore'"
            )
        object.__setattr__(self, "target", target)

    def resolve(self) -> ExploreFunction:
        """The function: ``fn``, or imported from ``target`` under the policy in force.

        Raises:
            ConfigError: The policy refuses the import, or it fails.
        """
        if self.fn is not None:
            return self.fn
        # Importing runs code: the one place that names code for processes does it.
        from pbtkit._target import load_named

        return load_named(self.target)

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Call the function and check its result.

        Raises:
            OutOfSpace: The function returned something that is not a full set of
                hyperparameters inside ``space``.
            ConfigError: The function cannot be imported, or may not be.
        """
        result = self.resolve()(dict(hparams), space, rng)
        if not isinstance(result, Mapping):
            raise OutOfSpace(
                f"your explore function {self.target} returned {type(result).__name__} "
                f"{result!r}; return a dict of name -> value for every hyperparameter"
            )
        try:
            return space.validate(result)
        except OutOfSpace as error:
            raise OutOfSpace(
                f"your explore function {self.target} returned {dict(result)!r}, which is "
                f"not in the search space: {error}"
            ) from None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CustomExplore:
        """Build from a spec's settings; nothing is imported (see the class docstring).

        Raises:
            ConfigError: The target is missing, or not an import path.
        """
        check_keys(
            f"explore spec {dict(settings)!r} of type 'custom'", settings, (), ("type", "target")
        )
        if "target" not in settings:
            raise ConfigError(
                f"explore spec {dict(settings)!r}: missing target; a 'custom' explorer takes "
                f"the keys type, target ('module:qualname')"
            )
        if not _is_target(settings["target"]):
            raise ConfigError(
                f"custom explore target {settings['target']!r} must be an import path "
                f"'module:qualname', e.g. 'mypkg.search:explore'"
            )
        # Nothing is imported here: reading a spec must never run the code it names.
        return cls(target=settings["target"])

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "custom", "target": "module:qualname"}``."""
        return {"type": "custom", "target": self.target}


def _is_target(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    module_name, sep, qualname = target.rpartition(":")
    return bool(sep and module_name and qualname)
