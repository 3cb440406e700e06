"""The pure core of pbtkit: no I/O, no clock, no global random state.

Everything here takes a :class:`numpy.random.Generator` where it needs randomness and
returns values; the controller is the only place that carries decisions out.
"""

from pbtkit.core.decisions import Continue, Decision, Exploit, MemberView, Stop
from pbtkit.core.exploit import BinaryTournament, Exploiter, Truncation, exploiter_from_dict
from pbtkit.core.explore import CustomExplore, Explorer, Perturb, Resample, explorer_from_dict
from pbtkit.core.fitness import Objective, objective_from_dict
from pbtkit.core.lineage import (
    Schedule,
    Segment,
    TrialNode,
    ancestry,
    schedule,
    topological_order,
)
from pbtkit.core.policy import PBT
from pbtkit.core.space import (
    Choice,
    Domain,
    IntUniform,
    LogUniform,
    Ordinal,
    SearchSpace,
    Uniform,
    domain_from_dict,
)

__all__ = [
    "BinaryTournament",
    "Choice",
    "Continue",
    "CustomExplore",
    "Decision",
    "Domain",
    "Exploit",
    "Exploiter",
    "Explorer",
    "IntUniform",
    "LogUniform",
    "MemberView",
    "Objective",
    "Ordinal",
    "PBT",
    "Perturb",
    "Resample",
    "Schedule",
    "SearchSpace",
    "Segment",
    "Stop",
    "TrialNode",
    "Truncation",
    "Uniform",
    "ancestry",
    "domain_from_dict",
    "explorer_from_dict",
    "exploiter_from_dict",
    "objective_from_dict",
    "schedule",
    "topological_order",
]
