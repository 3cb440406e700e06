"""The search space: one :class:`Domain` (a prior) per hyperparameter.

A domain knows how to draw a value from its prior (:meth:`Domain.sample`), how to check and
normalise a value a user or a config file gave (:meth:`Domain.validate`), and how to move a
value a little (:meth:`Domain.perturb`, the *explore* step of PBT). Every value a domain
hands out is a plain Python scalar (``float``, ``int``, ``str``, ``bool`` or ``None``),
never a numpy scalar, so hyperparameters can be written to JSON as they are.

A value never leaves its space: perturbing clips into the domain's range, and
:meth:`SearchSpace.validate` is the gate every set of hyperparameters passes through.

A domain may be *conditional* (``when={"optimizer": "sgd"}``, see
:mod:`pbtkit.core.conditions`): its hyperparameter is active only while the conditions on
its parents hold. The parents form a DAG that the space checks when it is built; a member
holds exactly its active hyperparameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._dag import MAX_CONDITIONAL, _analyse, _names, _not_a_domain
from pbtkit.core.conditions import When
from pbtkit.core.domains import (
    Choice,
    Domain,
    IntUniform,
    LogUniform,
    Ordinal,
    Uniform,
    domain_from_dict,
)

__all__ = [
    "MAX_CONDITIONAL",
    "Choice",
    "Domain",
    "IntUniform",
    "LogUniform",
    "Ordinal",
    "SearchSpace",
    "Uniform",
    "domain_from_dict",
]


class SearchSpace(Mapping[str, Domain]):
    """An immutable mapping of hyperparameter names to their domains.

    A domain with ``when={parent: condition}`` makes its hyperparameter *conditional*:
    active, and present in a member's values, only while its conditions hold. The parents
    must form a DAG; the space is walked in topological order (:attr:`order`), so a
    member holds exactly its active hyperparameters (:meth:`sample`, :meth:`validate`).

    Args:
        domains: The domains by name, in the order hyperparameters should be listed.

    Raises:
        ConfigError: The space is empty, a name is not a non-empty string, a value is
            not a :class:`Domain`, or the conditions are invalid: a parent that is not
            in the space, a cycle, a condition that does not fit its parent's domain or
            that can never hold.
    """

    __slots__ = ("_domains", "_order", "_when")

    def __init__(self, domains: Mapping[str, Domain]) -> None:
        if isinstance(domains, SearchSpace):
            self._domains: dict[str, Domain] = dict(domains._domains)
            self._order: tuple[str, ...] = domains._order
            self._when: dict[str, When] = dict(domains._when)
            return
        if not isinstance(domains, Mapping):
            raise ConfigError(
                f"a search space must be a mapping of names to domains, e.g. "
                f"{{'lr': pk.LogUniform(1e-4, 1e-1)}}; got {type(domains).__name__}"
            )
        if not domains:
            raise ConfigError(
                "the search space is empty; give at least one hyperparameter, e.g. "
                "{'lr': pk.LogUniform(1e-4, 1e-1)}"
            )
        checked: dict[str, Domain] = {}
        for name, domain in domains.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"hyperparameter names must be non-empty strings, got {name!r}")
            if not isinstance(domain, Domain):
                raise ConfigError(_not_a_domain(name, domain))
            checked[name] = domain
        self._domains = checked
        self._when, self._order = _analyse(checked)

    def __getitem__(self, name: str) -> Domain:
        return self._domains[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._domains)

    def __len__(self) -> int:
        return len(self._domains)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SearchSpace):
            return self._domains == other._domains
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._domains.items()))

    def __repr__(self) -> str:
        return f"SearchSpace({self._domains!r})"

    @property
    def conditional(self) -> bool:
        """Whether some hyperparameter has conditions (is not always active)."""
        return bool(self._when)

    @property
    def order(self) -> tuple[str, ...]:
        """The names in topological order: every parent before the hyperparameters that
        depend on it, otherwise in the space's order (the space's order when flat)."""
        return self._order

    def conditions(self, name: str) -> When | None:
        """The conditions under which ``name`` is active (None: always active).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        return self._when.get(name)

    def parents(self, name: str) -> tuple[str, ...]:
        """The hyperparameters whose values decide whether ``name`` is active.

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        when = self._when.get(name)
        return tuple(when) if when is not None else ()

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name``'s conditions hold on ``values``.

        Args:
            name: A hyperparameter of the space.
            values: The values of the *active* hyperparameters, at least the parents of
                ``name`` (an inactive parent is absent, so what depends on it is inactive).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        when = self._when.get(name)
        return when is None or when.holds(values)

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """The hyperparameters active under ``values``, in the space's order.

        Walked parents first: a parent's value counts only when the parent is active and
        has a value in ``values``, so stale values of inactive hyperparameters are ignored.
        """
        seen: dict[str, Any] = {}
        active: set[str] = set()
        for name in self._order:
            if self.is_active(name, seen):
                active.add(name)
                if name in values:
                    seen[name] = values[name]
        return [name for name in self._domains if name in active]

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw every active hyperparameter from its prior, parents first.

        In a flat space every hyperparameter is drawn, in the space's order.

        Args:
            rng: The source of randomness.

        Returns:
            A fresh dict of plain Python values, in the space's order.
        """
        if not self._when:
            return {name: domain.sample(rng) for name, domain in self._domains.items()}
        return self.complete({}, rng)

    def complete(self, values: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Make ``values`` a member of the space: walk it parents first, keep the active
        values given, draw the active ones missing from their priors, and drop the values
        that are inactive.

        The tool for your own explore function when it changes a parent:
        ``return space.complete({**hparams, "optimizer": "adam"}, rng)``.

        Args:
            values: Values by name (some may be missing or inactive).
            rng: The source of randomness for the values drawn.

        Returns:
            A fresh dict that :meth:`validate` accepts as it is, in the space's order.

        Raises:
            OutOfSpace: ``values`` is not a mapping, names a hyperparameter the space
                lacks, or holds an active value outside its domain.
        """
        self._check_names(values)
        out: dict[str, Any] = {}
        for name in self._order:
            if not self.is_active(name, out):
                continue
            domain = self._domains[name]
            given = name in values
            out[name] = domain.validate(name, values[name]) if given else domain.sample(rng)
        return {name: out[name] for name in self._domains if name in out}

    def validate(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Check a full set of hyperparameters against the space and normalise it.

        Args:
            hparams: A value for every *active* hyperparameter in the space (all of them
                in a flat space), and nothing else: no inactive one.

        Returns:
            The values normalised by their domains, in the space's order.

        Raises:
            OutOfSpace: A name is missing or unknown, a value lies outside its domain, or
                an inactive hyperparameter has a value.
        """
        if not isinstance(hparams, Mapping):
            raise OutOfSpace(
                f"hyperparameters must be a mapping of name -> value, "
                f"got {type(hparams).__name__} {hparams!r}"
            )
        if self._when:
            return self._validate_conditional(hparams)
        missing = [name for name in self._domains if name not in hparams]
        unknown = [repr(name) for name in hparams if name not in self._domains]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: "
                f"{'; '.join(problems)}; give exactly the names {', '.join(self._domains)}"
            )
        return {
            name: domain.validate(name, hparams[name]) for name, domain in self._domains.items()
        }

    def _check_names(self, hparams: Mapping[str, Any]) -> None:
        if not isinstance(hparams, Mapping):
            raise OutOfSpace(
                f"hyperparameters must be a mapping of name -> value, "
                f"got {type(hparams).__name__} {hparams!r}"
            )
        unknown = [repr(name) for name in hparams if name not in self._domains]
        if unknown:
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: unknown "
                f"{', '.join(unknown)}; its names are {_names(self._domains)}"
            )

    def _validate_conditional(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`validate` for a space with conditions: parents first, each value
        checked, each hyperparameter's presence checked against its conditions."""
        self._check_names(hparams)
        out: dict[str, Any] = {}
        undecided: set[str] = set()  # a parent is missing: activity unknown
        missing: list[str] = []
        inactive: list[str] = []
        for name in self._order:
            parents = self.parents(name)
            if any(parent in undecided for parent in parents):
                undecided.add(name)
                continue
            if self.is_active(name, out):
                if name in hparams:
                    out[name] = self._domains[name].validate(name, hparams[name])
                else:
                    missing.append(name)
                    undecided.add(name)
            elif name in hparams:
                inactive.append(self._why_inactive(name, out))
        if missing or inactive:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"inactive {'; '.join(inactive)}"] if inactive else []
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: "
                f"{'; '.join(problems)}. Give a value for every active hyperparameter and "
                f"none for an inactive one (space.complete(values, rng) drops the inactive "
                f"and draws the missing)"
            )
        return {name: out[name] for name in self._domains if name in out}

    def _why_inactive(self, name: str, values: Mapping[str, Any]) -> str:
        when = self._when[name]
        now = ", ".join(
            f"{parent} is {values[parent]!r}" if parent in values else f"{parent} is inactive"
            for parent in when
        )
        return f"{name} (it needs {when.describe()}; {now})"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as JSON-able specs by name; :meth:`from_dict` reads it back."""
        return {name: domain.to_dict() for name, domain in self._domains.items()}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """Build a space from specs by name (as :meth:`to_dict` writes them).

        Raises:
            ConfigError: The spec is not a mapping, or a domain spec is invalid.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"a search space spec must be a mapping of names to domain specs, "
                f"got {type(spec).__name__}"
            )
        domains: dict[str, Domain] = {}
        for name, domain_spec in spec.items():
            if not isinstance(domain_spec, Mapping):
                raise ConfigError(_not_a_domain(name, domain_spec))
            try:
                domains[name] = domain_from_dict(domain_spec)
            except ConfigError as error:
                raise ConfigError(f"hyperparameter {name!r}: {error}") from None
        return cls(domains)

    @staticmethod
    def coerce(space: SearchSpace | Mapping[str, Domain | Mapping[str, Any]]) -> SearchSpace:
        """Turn what a user may pass as a space into a :class:`SearchSpace`.

        Args:
            space: A :class:`SearchSpace`, a mapping of names to domains, or a mapping of
                names to domain specs (as read from a TOML or YAML config); both may mix.

        Returns:
            The space (the same object when it already is one).

        Raises:
            ConfigError: Something in it is neither a domain nor a valid domain spec.
        """
        if isinstance(space, SearchSpace):
            return space
        if not isinstance(space, Mapping):
            raise ConfigError(
                f"a search space must be a mapping of names to domains, e.g. "
                f"{{'lr': pk.LogUniform(1e-4, 1e-1)}}; got {type(space).__name__}"
            )
        domains: dict[str, Domain] = {}
        for name, value in space.items():
            if isinstance(value, Domain):
                domains[name] = value
            elif isinstance(value, Mapping):
                try:
                    domains[name] = domain_from_dict(value)
                except ConfigError as error:
                    raise ConfigError(f"hyperparameter {name!r}: {error}") from None
            else:
                raise ConfigError(_not_a_domain(name, value))
        return SearchSpace(domains)
