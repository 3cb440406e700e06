"""Plug-in families: every exploit, explore, fitness and inheritance strategy by its kind.

Each family has a base class and a :class:`Registry`. A class of the family names its
``kind`` (``"truncation"``); a subclass that names none is known by its import path
(``"mypkg.strategies:Best"``), so another process (a worker, a server) can find it. A
class registers itself when it is defined, so a user's own subclass works in the process
that defined it, and in any other that imports it. A spec names the kind as its ``type``::

    {"type": "truncation", "fraction": 0.25}
    {"type": "mypkg.strategies:Best", "margin": 0.1}

Building a spec whose kind is an import path imports that module only under the import
policy in force (:mod:`pbtkit._target`): a process running its own experiments trusts its
store; ``pbtkit serve`` allows only the packages named with ``--allow-import``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from pbtkit._exceptions import ConfigError
from pbtkit.core._specs import check_keys

__all__ = ["Registry", "is_path_kind", "kind_of"]

T = TypeVar("T")


def is_path_kind(kind: str) -> bool:
    """Whether a kind is an import path (``module:qualname``) rather than a built-in name."""
    module, sep, name = kind.rpartition(":")
    return bool(sep and module and name)


def kind_of(cls: type) -> str:
    """A class's kind: the one it names, else its import path."""
    named = cls.__dict__.get("kind")
    return named if isinstance(named, str) else f"{cls.__module__}:{cls.__qualname__}"


class Registry(Generic[T]):
    """The classes of one plug-in family, by kind.

    Args:
        family: What the family is called in messages (``"exploit"``).
        base: The family's base class; every registered class derives from it.
    """

    def __init__(self, family: str, base: type[T]) -> None:
        self.family = family
        self.base = base
        self._classes: dict[str, type[T]] = {}

    def add(self, cls: type[T]) -> type[T]:
        """Register ``cls`` under its kind (the last definition of a kind wins: a module
        reloaded in a notebook replaces its classes)."""
        self._classes[kind_of(cls)] = cls
        return cls

    def kinds(self) -> list[str]:
        """The kinds known in this process, built-ins first."""
        return list(self._classes)

    def lookup(self, kind: Any) -> type[T]:
        """The class of a kind, importing an import path under the import policy.

        Raises:
            ConfigError: The kind is unknown, cannot be imported (or may not be), or names
                something that is not of this family.
        """
        found = self._classes.get(kind) if isinstance(kind, str) else None
        if found is not None:
            return found
        if not isinstance(kind, str) or not is_path_kind(kind):
            raise ConfigError(
                f"{self._an} spec has type {kind!r}; valid types: "
                f"{', '.join(self._builtin())}, or the import path of your own subclass of "
                f"{self.base.__name__} ('mypkg.module:Class')"
            )
        from pbtkit._target import load_named

        loaded: Any = load_named(kind)  # checks the import policy first
        if not isinstance(loaded, type) or not issubclass(loaded, self.base):
            raise ConfigError(
                f"{self._an} spec has type {kind!r}, which is not a subclass of "
                f"{self.base.__name__}"
            )
        return loaded

    def build(self, spec: Any, legacy: Callable[[Mapping[str, Any]], T] | None = None) -> T:
        """Build a plug-in from its spec ``{"type": kind, **settings}``.

        Args:
            spec: The spec, as written by the plug-in's ``to_dict``.
            legacy: How to read a spec without a ``type`` (a format older than the
                registry), if the family has one.

        Raises:
            ConfigError: The spec is not a mapping, its type is unknown, or its settings
                are not the class's.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{self._an} spec must be a mapping, got {type(spec).__name__}")
        if "type" not in spec and legacy is not None:
            return legacy(spec)
        cls = self.lookup(spec.get("type"))
        settings = {str(k): v for k, v in spec.items() if k != "type"}
        from_settings = getattr(cls, "from_settings", None)
        if callable(from_settings):
            built: T = from_settings(settings)
            return built
        subject = f"{self.family} spec {dict(spec)!r} of type {spec.get('type')!r}"
        return _from_fields(cls, settings, subject)

    def _builtin(self) -> list[str]:
        return [k for k in self._classes if not is_path_kind(k)]

    @property
    def _an(self) -> str:
        return f"an {self.family}" if self.family[:1] in "aeiou" else f"a {self.family}"


def _abstract(cls: type) -> bool:
    # Called while the class is being made, before ABCMeta counts its abstract methods.
    return any(
        getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls)
    )


def _from_fields(cls: type[T], settings: Mapping[str, Any], subject: str) -> T:
    """``cls(**settings)`` for a dataclass, after checking the settings are its fields."""
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls) if f.init)
        check_keys(subject, settings, (), ("type", *names))
    return cls(**settings)


class Plugin:
    """What a plug-in class of any family shares: its ``kind``, registration when defined,
    and a spec written as ``{"type": kind, **settings}``.

    A family's base sets ``registry``. A dataclass plug-in writes its fields as its
    settings; another overrides :meth:`settings` and ``from_settings``.
    """

    __slots__ = ()

    registry: ClassVar[Registry[Any]]
    kind: ClassVar[str]

    def __init_subclass__(cls, family: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if family is not None:  # the family's base: ``class Exploiter(Plugin, family=...)``
            cls.registry = Registry(family, cls)
            return
        if _abstract(cls):
            return  # an abstract intermediate class: nothing to build
        cls.registry.add(cls)

    def spec_settings(self) -> dict[str, Any]:
        """The settings a spec of this plug-in holds (by default a dataclass's fields)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": kind, **settings}``, which the family's registry reads back."""
        return {"type": kind_of(type(self)), **self.spec_settings()}
