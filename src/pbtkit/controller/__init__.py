"""The controller: the only place where the store and the policy meet.

A package along its seams:

- :mod:`~pbtkit.controller._protocol`: what a worker or client may ask
  (:class:`ControllerAPI`) and the records that cross (:class:`Lease`, :class:`Summary`,
  :class:`Snapshot`);
- :mod:`~pbtkit.controller._controller`: the transactions (:class:`Controller`), on top
  of the reads of :mod:`~pbtkit.controller._base`;
- :mod:`~pbtkit.controller._batch`: leasing and finishing many trials in one call, for
  a worker that trains a population at once (:mod:`pbtkit.torch.vectorized`);
- :mod:`~pbtkit.controller._apply`: a decision turned into records and words, pure;
- :mod:`~pbtkit.controller._population`: the population as a deciding member sees it,
  cached in numpy columns;
- :mod:`~pbtkit.controller._retention`: which checkpoints nothing needs any more;
- :mod:`~pbtkit.controller._recovery`: runs whose starts all fail, failed runs run again,
  bad checkpoints;
- :mod:`~pbtkit.controller._liveness`: who holds a lease, and whether it is alive.
"""

from pbtkit.controller._controller import Controller
from pbtkit.controller._liveness import worker_identity
from pbtkit.controller._protocol import (
    ACTIVE_STATUSES,
    FINISHED,
    WAIT,
    BatchFinish,
    ControllerAPI,
    Lease,
    Snapshot,
    Summary,
    TrialResult,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED",
    "WAIT",
    "BatchFinish",
    "Controller",
    "ControllerAPI",
    "Lease",
    "Snapshot",
    "Summary",
    "TrialResult",
    "worker_identity",
]
