"""The pure core of pbtkit: no I/O, no clock, no global random state.

Everything here takes a :class:`numpy.random.Generator` where it needs randomness and
returns values; the controller is the only place that carries decisions out.
"""

from pbtkit.core.conditions import (
    Compare,
    Condition,
    Equals,
    Gt,
    Gte,
    In,
    Lt,
    Lte,
    When,
    condition_from_spec,
)
from pbtkit.core.custom_explore import CustomExplore
from pbtkit.core.decisions import INHERIT_MODES, Continue, Decision, Exploit, MemberView, Stop
from pbtkit.core.exploit import (
    BinaryTournament,
    Exploiter,
    Initiator,
    NoExploit,
    Truncation,
    TTest,
    exploiter_from_dict,
)
from pbtkit.core.explore import (
    Explorer,
    GaussianNoise,
    Keep,
    Perturb,
    Resample,
    call_explorer,
    explorer_from_dict,
)
from pbtkit.core.fitness import Fitness, MultiObjective, Objective, objective_from_dict
from pbtkit.core.inheritance import ShrinkPerturb, inherit_from_dict, shrink_perturb
from pbtkit.core.lineage import (
    Schedule,
    Segment,
    TrialNode,
    ancestry,
    schedule,
    topological_order,
)
from pbtkit.core.pb2 import PB2
from pbtkit.core.policy import PBT
from pbtkit.core.population import Population
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
    "INHERIT_MODES",
    "BinaryTournament",
    "Choice",
    "Compare",
    "Condition",
    "Continue",
    "CustomExplore",
    "Decision",
    "Domain",
    "Equals",
    "Exploit",
    "Exploiter",
    "Explorer",
    "Fitness",
    "GaussianNoise",
    "Gt",
    "Gte",
    "In",
    "Initiator",
    "IntUniform",
    "Keep",
    "LogUniform",
    "Lt",
    "Lte",
    "MemberView",
    "MultiObjective",
    "NoExploit",
    "Objective",
    "Ordinal",
    "PB2",
    "PBT",
    "Perturb",
    "Population",
    "Resample",
    "Schedule",
    "SearchSpace",
    "Segment",
    "ShrinkPerturb",
    "Stop",
    "TTest",
    "TrialNode",
    "Truncation",
    "Uniform",
    "When",
    "ancestry",
    "call_explorer",
    "condition_from_spec",
    "domain_from_dict",
    "exploiter_from_dict",
    "explorer_from_dict",
    "inherit_from_dict",
    "objective_from_dict",
    "schedule",
    "shrink_perturb",
    "topological_order",
]
