"""A run in a real Jupyter kernel: progress redrawn in the cell, the result shown as HTML."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

import pbtkit as pk
from tests import trainers

ROOT = Path(__file__).resolve().parents[1]


class Tables(HTMLParser):
    """The text of every table cell, by table class; and every tag opened."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self._table = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _settings(tmp_path: Path, **kw: object) -> dict[str, object]:
    return {
        "space": {"x": pk.Uniform(0.1, 1.0)},
        "metric": "score",
        "population": 4,
        "workers": 2,
        "ready_every": 3,
        "total_steps": 9,
        "executor": "thread",
        "storage": f"sqlite:///{tmp_path / 'run.db'}",
        "progress": False,
        "tensorboard": False,
        "name": "nb",
        **kw,
    }


def test_the_html_shows_the_best_member_the_members_and_the_schedule(tmp_path: Path) -> None:
    result = pk.run(trainers.climb, **_settings(tmp_path))  # type: ignore[arg-type]
    parsed = Tables()
    parsed.feed(result._repr_html_())
    best = result.best
    members = parsed.tables["members"]
    assert members[0] == ["member", "status", "step", "score", "x"]
    assert len(members) == 1 + len(result.members)
    assert members[1][0] == str(best.member)  # the best first
    assert float(members[1][3]) == pytest.approx(best.score, rel=1e-3)
    schedule = parsed.tables["schedule"]
    segments = result.schedule().segments
    assert len(schedule) == 1 + len(segments)
    for row, segment in zip(schedule[1:], segments, strict=True):
        assert row[0] == f"{segment.start_step}\u2013{segment.end_step}"
        assert float(row[3]) == pytest.approx(segment.hparams["x"], rel=1e-3)


def test_hostile_names_stay_text(tmp_path: Path) -> None:
    name = "<script>alert(1)</script>"
    space = {"x": pk.Uniform(0.1, 1), name: pk.Choice([name, "b"])}
    # an experiment's name is plain; a hyperparameter's and a value may still be markup
    result = pk.run(trainers.climb, **_settings(tmp_path, space=space, name="hostile"))  # type: ignore[arg-type]
    text = result._repr_html_()
    assert "<script>" not in text
    parsed = Tables()
    parsed.feed(text)
    assert "script" not in parsed.tags
    assert name in parsed.tables["members"][0]


def test_a_run_in_a_jupyter_kernel(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    setup = (
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT)!r}]\n"
        "import pbtkit as pk\n"
        "from tests import trainers\n"
    )
    run = (
        "result = pk.run(trainers.climb, space={'x': pk.Uniform(0.1, 1.0)}, metric='score',\n"
        "    population=4, workers=2, ready_every=3, total_steps=9, executor='thread',\n"
        f"    storage={'sqlite:///' + str(tmp_path / 'run.db')!r}, tensorboard=False, name='nb')\n"
    )
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in (setup, run, "result")]
    )
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = notebook.cells[1].outputs
    # progress is on by default in a notebook: one display, redrawn in place to the end
    progress = [o for o in outputs if o.get("output_type") == "display_data"]
    assert len(progress) == 1, outputs
    html = progress[0]["data"]["text/html"]
    assert 'class="pbtkit-progress"' in html
    assert "36/36 steps" in html
    assert "finished" in html
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    shown = notebook.cells[2].outputs[0]
    assert shown["output_type"] == "execute_result"
    assert 'class="pbtkit-result"' in shown["data"]["text/html"]
    result = pk.Result.load(f"sqlite:///{tmp_path / 'run.db'}", "nb")
    assert f"Best: member {result.best.member}" in shown["data"]["text/html"]
    assert math.isfinite(result.best.score)
