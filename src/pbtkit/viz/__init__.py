"""What people look at: plots, TensorBoard files, the dashboard, and the data behind them.

::

    import pbtkit as pk
    from pbtkit import viz

    result = pk.Result.load("sqlite:///pbt-demo/pbt.db", "toy")
    viz.plot(result, "plots", paths=("theta0", "theta1"))   # PNG and SVG of every plot

Plots need ``pip install 'pbtkit[plot]'``, TensorBoard ``pbtkit[tensorboard]`` (both:
``pbtkit[viz]``); the dashboard (``pbtkit serve``, ``pbtkit dashboard``) needs
``pip install 'pbtkit[dashboard]'``.
"""

from pbtkit.viz._view import Jump, MemberRow, RunView, TreeNode
from pbtkit.viz.plots import (
    curves_figure,
    family_tree_figure,
    paths_figure,
    plot,
    schedules_figure,
)
from pbtkit.viz.tensorboard import TensorBoardLogger

__all__ = [
    "Jump",
    "MemberRow",
    "RunView",
    "TensorBoardLogger",
    "TreeNode",
    "curves_figure",
    "family_tree_figure",
    "paths_figure",
    "plot",
    "schedules_figure",
]
