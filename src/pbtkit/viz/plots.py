"""Plots of a run with matplotlib (``pip install 'pbtkit[plot]'``).

- :func:`curves_figure`: each member's metric over its steps, exploits marked;
- :func:`schedules_figure`: each hyperparameter's value over each member's steps;
- :func:`family_tree_figure`: members over steps, an edge per trial, exploits crossing
  between members, the best member's lineage highlighted;
- :func:`paths_figure`: for a problem with two coordinates reported as metrics (the toy
  of the PBT paper reports ``theta0`` and ``theta1``), each member's path over the
  objective's contours.

:func:`plot` writes them all as PNG and SVG. Figures are built with
``matplotlib.figure.Figure`` and never through ``pyplot``, so plotting changes no global
state of matplotlib in the caller's process.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pbtkit._exceptions import ConfigError, NotFound
from pbtkit.viz._view import RunView

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from pbtkit.result import Result

__all__ = [
    "FORMATS",
    "curves_figure",
    "family_tree_figure",
    "paths_figure",
    "plot",
    "schedules_figure",
]

FORMATS = ("png", "svg")
Stretch = tuple[int, int, dict[str, Any]]
Objective2D = Callable[[np.ndarray, np.ndarray], np.ndarray]
_BEST = "#d62728"


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError("plots need matplotlib: pip install 'pbtkit[plot]'") from exc
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _colors(members: Sequence[int]) -> dict[int, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(members) <= 10 else "turbo"]
    count = max(len(members) - 1, 1)
    return {
        m: cmap(i % 10) if len(members) <= 10 else cmap(i / count) for i, m in enumerate(members)
    }


def _legend(ax: Axes, members: int) -> None:
    if members > 16:
        return
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == "exploit")  # members first
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),  # beside the axes, where it hides no line
        frameon=False,
    )


def _view(run: RunView | Result) -> RunView:
    return run if isinstance(run, RunView) else RunView.of(run)


def curves_figure(run: RunView | Result, metric: str | None = None) -> Figure:
    """Each member's ``metric`` (the objective by default) over its steps.

    The line breaks where a member exploited (its weights were replaced by the donor's);
    a dotted line and a triangle mark the jump.

    Raises:
        NotFound: No report names the metric.
    """
    view = _view(run)
    metric = metric or view.metric
    curves = view.curves(metric)
    if not curves:
        raise NotFound(f"experiment {view.name!r} has no reports yet; nothing to plot")
    fig = _figure(8, 4.8)
    ax = fig.add_subplot()
    colors = _colors(sorted(curves))
    marked = False
    for member, points in curves.items():
        steps = np.array([s for s, _ in points], dtype=float)
        values = np.array([v for _, v in points], dtype=float)
        jumps = sorted({j.step for j in view.member_jumps(member)})
        bounds = [0, *np.searchsorted(steps, jumps).tolist(), len(steps)]
        best = member == view.best_member
        # few reports (one per trial, say): dots, so a stretch of one report still shows
        marker = "o" if len(points) <= 4 * max(len(jumps) + 1, 10) else None
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            if a >= b:
                continue
            ax.plot(
                steps[a:b],
                values[a:b],
                color=colors[member],
                linewidth=2.2 if best else 1.2,
                marker=marker,
                markersize=3,
                label=(f"member {member}" + (" (best)" if best else "")) if i == 0 else None,
                zorder=3 if best else 2,
            )
            if a > 0:  # a jump: from the last value before to the first after
                ax.plot(steps[a - 1 : a + 1], values[a - 1 : a + 1], ":", color=colors[member])
                ax.plot(
                    steps[a],
                    values[a],
                    "v",
                    color=colors[member],
                    markeredgecolor="black",
                    markersize=6,
                    zorder=4,
                )
                marked = True
    if marked:  # one neutral legend entry for the triangles of every member
        ax.plot([], [], "v", color="white", markeredgecolor="black", label="exploit")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{view.name}: {metric} per member ({len(view.jumps)} exploits)")
    ax.grid(alpha=0.3)
    _legend(ax, len(curves))
    return fig


def schedules_figure(run: RunView | Result) -> Figure:
    """Each hyperparameter's value over each member's steps (one panel per hyperparameter).

    Exploits show as jumps marked with a triangle; a log-uniform hyperparameter is drawn
    on a log axis; a categorical one on its values. A conditional hyperparameter's line
    breaks where it was inactive.

    Raises:
        NotFound: No trial has started yet.
    """
    view = _view(run)
    schedules = view.schedules()
    if not schedules:
        raise NotFound(f"experiment {view.name!r} has no trials yet; nothing to plot")
    names = view.hparam_names
    fig = _figure(8, 1.2 + 2.3 * len(names))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    colors = _colors(sorted(schedules))
    for ax, name in zip(axes, names, strict=True):
        domain = view.space.get(name, {})
        categories = _categories(name, domain, schedules)
        for member, stretches in schedules.items():
            best = member == view.best_member
            xs: list[float] = []
            ys: list[float] = []
            for start, end, hparams in stretches:
                # NaN where the hyperparameter is inactive (absent): the line breaks there
                value = _number(hparams[name], categories) if name in hparams else math.nan
                xs += [start, end]
                ys += [value, value]
            ax.plot(
                xs,
                ys,
                color=colors[member],
                linewidth=2.2 if best else 1.1,
                label=f"member {member}" + (" (best)" if best else ""),
                zorder=3 if best else 2,
            )
            for jump in view.member_jumps(member):
                if name not in jump.new_hparams:
                    continue  # inactive after the exploit: no marker on this panel
                value = _number(jump.new_hparams[name], categories)
                ax.plot(jump.step, value, "v", color=colors[member], markeredgecolor="black")
        if categories is not None:
            ax.set_yticks(range(len(categories)), [str(c) for c in categories])
        elif domain.get("type") == "loguniform":
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{view.name}: hyperparameter schedules (triangles: exploits)")
    _legend(axes[0], len(schedules))
    return fig


def family_tree_figure(run: RunView | Result) -> Figure:
    """Members over steps: a node where each trial ended, an edge from the trial it
    started from; exploits cross between members; the best member's lineage in red.

    Raises:
        NotFound: No trial has started yet.
    """
    view = _view(run)
    nodes = {n.trial_id: n for n in view.nodes if n.status != "failed"}
    if not nodes:
        raise NotFound(f"experiment {view.name!r} has no trials yet; nothing to plot")
    fig = _figure(9, max(3.0, 1.0 + 0.45 * view.population))
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    ax = fig.add_subplot()
    scores = [n.score for n in nodes.values() if math.isfinite(n.score)]
    norm = Normalize(min(scores, default=0.0), max(scores, default=1.0))
    cmap = colormaps["viridis" if view.mode == "max" else "viridis_r"]
    for node in nodes.values():
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        start = (parent.end_step, parent.member) if parent else (node.start_step, node.member)
        on_best = node.trial_id in view.best_lineage
        if node.is_exploit:
            color, width, style = ("#ff7f0e", 1.2, "-")
        else:
            color, width, style = ("#9e9e9e", 1.0, "-")
        if on_best:
            color, width = _BEST, 2.8
        ax.plot(
            [start[0], node.end_step],
            [start[1], node.member],
            style,
            color=color,
            linewidth=width,
            zorder=3 if on_best else (2 if node.is_exploit else 1),
        )
    done = [n for n in nodes.values() if n.status == "done"]
    open_ = [n for n in nodes.values() if n.status != "done"]
    ax.scatter(
        [n.end_step for n in done],
        [n.member for n in done],
        c=[n.score if math.isfinite(n.score) else np.nan for n in done],
        cmap=cmap,
        norm=norm,
        s=28,
        edgecolors=[_BEST if n.trial_id in view.best_lineage else "black" for n in done],
        linewidths=[1.6 if n.trial_id in view.best_lineage else 0.4 for n in done],
        zorder=5,
        plotnonfinite=True,
    )
    if open_:
        ax.scatter(
            [n.end_step for n in open_],
            [n.member for n in open_],
            facecolors="none",
            edgecolors="black",
            s=28,
            zorder=5,
            label="training",
        )
    roots = [n for n in nodes.values() if n.parent_id is None]
    ax.scatter([n.start_step for n in roots], [n.member for n in roots], c="black", s=10)
    mappable = ax.collections[0]
    fig.colorbar(mappable, ax=ax, label=view.metric, shrink=0.8)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="#9e9e9e", label="continue"),
        Line2D([], [], color="#ff7f0e", label="exploit (copied a member)"),
        Line2D([], [], color=_BEST, linewidth=2.8, label="lineage of the best member"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.12))
    ax.set_yticks(range(view.population))
    ax.set_ylim(-0.6, view.population - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("step")
    ax.set_ylabel("member")
    ax.set_title(f"{view.name}: family tree ({len(view.jumps)} exploits)")
    ax.grid(alpha=0.2)
    return fig


def paths_figure(
    run: RunView | Result,
    x: str,
    y: str,
    *,
    objective: Objective2D | None = None,
) -> Figure:
    """Each member's path through two reported coordinates over the objective's contours.

    Args:
        run: The run.
        x: The metric holding the first coordinate (``theta0`` for the toy).
        y: The metric holding the second (``theta1``).
        objective: ``f(x, y) -> value`` on numpy grids, for the contours. Without it the
            contours are a quadratic least-squares fit of the reported objective over
            the reported points (exact for the toy, whose objective is quadratic).

    Raises:
        NotFound: No report holds both coordinates.
    """
    view = _view(run)
    paths: dict[int, list[tuple[int, float, float, float]]] = {}
    for r in view.reports:
        if x in r.metrics and y in r.metrics:
            score = r.metrics.get(view.metric, math.nan)
            paths.setdefault(r.member, []).append((r.step, r.metrics[x], r.metrics[y], score))
    if not paths:
        reported = ", ".join(view.metrics) or "none"
        raise NotFound(
            f"no report of {view.name!r} holds both {x!r} and {y!r}; reported: {reported}"
        )
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    points = np.array([(px, py, s) for p in paths.values() for _, px, py, s in p], dtype=float)
    finite = points[np.isfinite(points).all(axis=1)]
    xs, ys = points[:, 0][np.isfinite(points[:, 0])], points[:, 1][np.isfinite(points[:, 1])]
    pad_x = 0.1 * (np.ptp(xs) or 1.0)
    pad_y = 0.1 * (np.ptp(ys) or 1.0)
    gx, gy = np.meshgrid(
        np.linspace(xs.min() - pad_x, xs.max() + pad_x, 200),
        np.linspace(ys.min() - pad_y, ys.max() + pad_y, 200),
    )
    label = view.metric
    grid: np.ndarray | None = None
    if objective is not None:
        grid = np.asarray(objective(gx, gy), dtype=float)
    elif len(finite) >= 6:
        grid = _quadratic_fit(finite, gx, gy)
        label = f"{view.metric} (quadratic fit of the reports)"
    if grid is not None and np.isfinite(grid).any():
        filled = ax.contourf(gx, gy, grid, levels=20, cmap="Greys", alpha=0.4)
        ax.contour(gx, gy, grid, levels=10, colors="grey", linewidths=0.5)
        fig.colorbar(filled, ax=ax, label=label, shrink=0.85)
    colors = _colors(sorted(paths))
    for member, path in sorted(paths.items()):
        path.sort()
        best = member == view.best_member
        jumps = {j.step for j in view.member_jumps(member)}
        segment: list[tuple[float, float]] = []
        for step, px, py, _ in path:
            if step in jumps and segment:
                _draw_path(ax, segment, colors[member], best)
                ax.plot([segment[-1][0], px], [segment[-1][1], py], ":", color=colors[member])
                ax.plot(px, py, "v", color=colors[member], markeredgecolor="black")
                segment = []
            segment.append((px, py))
        _draw_path(ax, segment, colors[member], best, label=f"member {member}")
        ax.plot(path[-1][1], path[-1][2], "o", color=colors[member], markeredgecolor="black")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{view.name}: paths of the members (triangles: exploits)")
    _legend(ax, len(paths))
    return fig


def plot(
    run: RunView | Result,
    out: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    metric: str | None = None,
    paths: tuple[str, str] | None = None,
    objective: Objective2D | None = None,
) -> list[Path]:
    """Write every plot of a run into ``out``, in each format.

    Writes ``curves``, ``schedules`` and ``family-tree`` (and ``paths`` when ``paths``
    names two reported coordinates), e.g. ``out/curves.png`` and ``out/curves.svg``.

    Args:
        run: A :class:`~pbtkit.Result` or a :class:`RunView`.
        out: The folder (created if needed).
        formats: Any of ``"png"``, ``"svg"``, ``"pdf"``.
        metric: The metric of the curves (the objective by default).
        paths: Two reported metrics holding a point's coordinates, for the paths plot.
        objective: The function whose contours lie under the paths (see
            :func:`paths_figure`).

    Returns:
        The files written.

    Raises:
        ConfigError: An unknown format, or matplotlib is missing.
        NotFound: A metric that no report names, or a run without reports yet.
    """
    unknown = [f for f in formats if f not in ("png", "svg", "pdf")]
    if unknown or not formats:
        raise ConfigError(f"formats must be among png, svg, pdf; got {', '.join(formats)}")
    view = _view(run)
    figures = {
        "curves": curves_figure(view, metric),
        "schedules": schedules_figure(view),
        "family-tree": family_tree_figure(view),
    }
    if paths is not None:
        figures["paths"] = paths_figure(view, *paths, objective=objective)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figures.items():
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            # No timestamps in the files, so plotting the same run twice writes the same bytes.
            metadata: dict[str, Any] = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}
            fig.savefig(path, format=fmt, metadata=metadata.get(fmt))
            written.append(path)
    return written


def _draw_path(
    ax: Axes, segment: list[tuple[float, float]], color: Any, best: bool, label: str | None = None
) -> None:
    if not segment:
        return
    xs, ys = zip(*segment, strict=True)
    ax.plot(
        xs,
        ys,
        "-",
        color=color,
        linewidth=2.2 if best else 1.2,
        label=label and (label + (" (best)" if best else "")),
    )


def _quadratic_fit(points: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray | None:
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    design = np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y])
    coef, _, rank, _ = np.linalg.lstsq(design, z, rcond=None)
    if rank < design.shape[1]:
        return None  # the points do not pin a quadratic down (all on a line, say)
    c = coef
    result: np.ndarray = c[0] + c[1] * gx + c[2] * gy + c[3] * gx**2 + c[4] * gx * gy + c[5] * gy**2
    return result


def _categories(
    name: str, domain: Mapping[str, Any], schedules: Mapping[int, list[Stretch]]
) -> list[Any] | None:
    """The values of a hyperparameter drawn as categories, or None for a numeric one."""
    values = domain.get("values")
    if domain.get("type") in ("choice", "ordinal") and isinstance(values, list):
        if domain.get("type") == "ordinal" and all(_is_number(v) for v in values):
            return None
        return values
    seen = [hp[name] for stretches in schedules.values() for _, _, hp in stretches if name in hp]
    if all(_is_number(v) for v in seen):
        return None
    return list(dict.fromkeys(seen))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, categories: list[Any] | None) -> float:
    if categories is None:
        return float(value) if _is_number(value) else math.nan
    return float(categories.index(value)) if value in categories else math.nan
