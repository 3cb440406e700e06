"""How a :class:`~pbtkit.Result` shows in a notebook: HTML, every name escaped.

The best member and its hyperparameters, a small table of the members (the best first,
at most :data:`MAX_MEMBERS` rows) and the schedule that produced the best member's
weights. Only text and numbers go in; every name and value is escaped, so a
hyperparameter called ``<script>`` shows as text.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pbtkit.result import Result

__all__ = ["MAX_MEMBERS", "result_html"]

MAX_MEMBERS = 12
_STYLE = (
    "<style>.pbtkit-result table{border-collapse:collapse;margin:.3em 0 .8em}"
    ".pbtkit-result th,.pbtkit-result td{padding:.15em .6em;text-align:right;"
    "border-bottom:1px solid #ddd}.pbtkit-result th{background:#f3f3f3}"
    ".pbtkit-result tr.best td{font-weight:600}.pbtkit-result .text{text-align:left}</style>"
)


def _fmt(value: Any) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _cell(value: Any, tag: str = "td", cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<{tag}{attr}>{escape(_fmt(value))}</{tag}>"


def _row(cells: list[str], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>{''.join(cells)}</tr>"


def result_html(result: Result) -> str:
    """The HTML a notebook shows for ``result`` (see the module docstring)."""
    names = list(result.spec.space)
    for m in result.members:
        names += [k for k in m.hparams if k not in names]
    done = sum(m.status == "done" for m in result.members)
    failed = sum(m.status == "failed" for m in result.members)
    trials = sum(t.status == "done" for t in result.trials)
    parts = [
        _STYLE,
        '<div class="pbtkit-result">',
        f"<h4>pbtkit experiment {escape(repr(result.name))} ({escape(result.status)})</h4>",
        f"<p>{len(result.members)} members: {done} done, {failed} failed; "
        f"{trials} trials, {len(result.exploits)} exploits; objective "
        f"{escape(result.metric)} ({escape(result.mode)})</p>",
    ]
    scored = [m for m in result.members if m.trial_id is not None]
    if not scored:
        parts.append("<p>No trial has finished yet.</p></div>")
        return "".join(parts)
    best = result.best
    parts.append(
        f"<p><b>Best: member {best.member}</b>, {escape(result.metric)} = "
        f"{escape(_fmt(best.score))} at step {best.step}; checkpoint "
        f"<code>{escape(str(best.checkpoint))}</code></p>"
    )
    # the members, the best first, then by score
    sign = 1.0 if result.mode == "max" else -1.0
    order = sorted(
        result.members,
        key=lambda m: (
            m.member != best.member,
            not math.isfinite(m.score),
            -sign * m.score if math.isfinite(m.score) else 0.0,
            m.member,
        ),
    )
    head = [_cell(c, "th", "text" if c == "status" else "") for c in ("member", "status", "step")]
    head += [_cell(result.metric, "th"), *(_cell(n, "th") for n in names)]
    rows = [_row(head)]
    for m in order[:MAX_MEMBERS]:
        cells = [_cell(m.member), _cell(m.status, cls="text"), _cell(m.step), _cell(m.score)]
        cells += [_cell(m.hparams.get(n)) for n in names]
        rows.append(_row(cells, "best" if m.member == best.member else ""))
    parts.append(f'<table class="members">{"".join(rows)}</table>')
    if len(order) > MAX_MEMBERS:
        parts.append(f"<p>… and {len(order) - MAX_MEMBERS} more members.</p>")
    # the schedule of the best member: what its weights were trained with
    schedule = result.schedule(best.member)
    head = [_cell("steps", "th", "text"), _cell("member", "th"), _cell("trial", "th")]
    head += [_cell(n, "th") for n in names]
    rows = [_row(head)]
    for segment in schedule.segments:
        cells = [
            _cell(f"{segment.start_step}\u2013{segment.end_step}", cls="text"),
            _cell(segment.member),
            _cell(segment.trial_id),
        ]
        cells += [_cell(segment.hparams.get(n)) for n in names]
        rows.append(_row(cells))
    parts.append(
        f"<p>The schedule of member {best.member}'s weights (across the members it copied):</p>"
        f'<table class="schedule">{"".join(rows)}</table></div>'
    )
    return "".join(parts)
