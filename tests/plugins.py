"""A user's own strategies, as a user would write them: subclasses of pbtkit's bases,
defined in their own module (imported by worker processes, and by a server that allows
``tests`` with ``--allow-import``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.core.decisions import MemberView
from pbtkit.core.population import Population


@dataclass(frozen=True, slots=True)
class CopyTheBest(pk.Exploiter):
    """Every member but the best copies the best, when it leads by more than ``margin``."""

    margin: float = 0.0

    def select_donor(
        self,
        member: MemberView,
        population: Population | Sequence[MemberView],
        objective: pk.Fitness,
        rng: np.random.Generator,
    ) -> MemberView | None:
        pop = Population.of(population, member)
        keys = pop.keys(objective)
        usable = np.flatnonzero(pop.has_checkpoint & np.isfinite(keys))
        if not len(usable):
            return None
        best = int(usable[np.argmax(keys[usable])])
        me = pop.index(member.member)
        if best == me or not keys[best] > keys[me] + self.margin:
            return None
        return pop.view(best)


@dataclass(frozen=True, slots=True)
class Halve(pk.Explorer):
    """Explore by halving ``x`` (never below ``floor``)."""

    floor: float = 0.1

    def __call__(
        self, hparams: Mapping[str, Any], space: pk.SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        return {**hparams, "x": max(self.floor, float(hparams["x"]) / 2)}


@dataclass(frozen=True, slots=True)
class Scale(pk.WeightTransform):
    """Inherit the donor's weights multiplied by ``factor``."""

    factor: float = 0.5

    def apply(self, arrays: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {name: np.asarray(value) * self.factor for name, value in arrays.items()}
