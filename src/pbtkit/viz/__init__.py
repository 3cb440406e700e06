"""What people look at: the plots, the dashboard's page, and the data behind them.

::

    import pbtkit as pk
    from pbtkit import viz

    result = pk.Result.load("sqlite:///pbt-demo/pbt.db", "toy")
    viz.plot(result, "plots", paths=("theta0", "theta1"))   # PNG and SVG of every plot

Plots need ``pip install 'pbtkit[plot]'``. The dashboard's page (``static/``) is served
by :mod:`pbtkit.service.dashboard` (``pip install 'pbtkit[dashboard]'``); TensorBoard
files are written by :mod:`pbtkit.loggers.tensorboard`.
"""

from pbtkit.viz._view import Jump, MemberRow, RunView, TreeNode
from pbtkit.viz.plots import (
    curves_figure,
    family_tree_figure,
    paths_figure,
    plot,
    schedules_figure,
)

__all__ = [
    "Jump",
    "MemberRow",
    "RunView",
    "TreeNode",
    "curves_figure",
    "family_tree_figure",
    "paths_figure",
    "plot",
    "schedules_figure",
]
