"""The view every picture is drawn from, and the plots of a finished run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import pbtkit as pk
from pbtkit.controller import Controller
from pbtkit.store import open_store
from pbtkit.viz import RunView, plot
from pbtkit.viz.plots import curves_figure, paths_figure
from tests.helpers import POPULATION, TOTAL_STEPS, Run

ROOT = Path(__file__).resolve().parents[2]
STEMS = ("curves", "schedules", "family-tree", "paths")


def _view(run: Run) -> RunView:
    return RunView.load(Controller(open_store(run.storage)), run.name)


def test_the_view_agrees_with_the_result(toy_run: Run) -> None:
    result, view = toy_run.result, _view(toy_run)
    assert view.best_member == result.best.member
    assert [m.member for m in view.members] == list(range(POPULATION))
    assert view.curves() == {m: sorted(points) for m, points in result.curves().items()}
    assert [(j.member, j.trial_id) for j in view.jumps] == [
        (e.member, e.trial_id) for e in result.exploits
    ]
    assert view.metrics == ["score", "theta0", "theta1"]
    # the best lineage is the chain of parents from the best member's latest trial
    latest = result.best.trial_id
    by_id = {t.id: t for t in result.trials}
    chain = set()
    while latest is not None:
        chain.add(latest)
        latest = by_id[latest].parent_id
    assert view.best_lineage == chain


def test_each_members_schedule_covers_its_steps(toy_run: Run) -> None:
    view = _view(toy_run)
    for member, stretches in view.schedules().items():
        assert stretches[0][0] == 0
        assert stretches[-1][1] == TOTAL_STEPS
        for (_, end, _), (start, _, _) in itertools.pairwise(stretches):
            assert end == start, member


def test_the_view_is_strict_json(toy_run: Run) -> None:
    data = _view(toy_run).to_json(max_points=7)
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["name"] == "toy"
    assert all(len(points) <= 8 for points in data["curves"].values())
    assert all(points[-1][0] == TOTAL_STEPS - 1 for points in data["curves"].values())


def test_every_plot_is_written_as_png_and_svg(toy_run: Run, tmp_path: Path) -> None:
    written = plot(toy_run.result, tmp_path, paths=("theta0", "theta1"))
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{fmt}" for stem in STEMS for fmt in ("png", "svg")
    )
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert path.stat().st_size > 10_000
        else:
            root = ET.parse(path).getroot()
            assert root.tag.endswith("svg")


def test_the_svg_says_what_it_shows(toy_run: Run, tmp_path: Path) -> None:
    plot(toy_run.result, tmp_path, formats=["svg"], paths=("theta0", "theta1"))
    text = {stem: (tmp_path / f"{stem}.svg").read_text() for stem in STEMS}
    # matplotlib writes text as glyphs; the titles are in the comments of the file
    assert "family tree" in text["family-tree"]
    assert "exploit" in text["curves"]
    assert "quadratic fit" in text["paths"]


def test_the_contours_may_come_from_a_function(toy_run: Run) -> None:
    figure = paths_figure(toy_run.result, "theta0", "theta1", objective=bowl)
    assert len(figure.axes) == 2  # the plot and the colour bar of the contours


def test_bad_input_says_what_exists(toy_run: Run, tmp_path: Path) -> None:
    with pytest.raises(pk.NotFound, match=r"'loss'.*reported: score, theta0, theta1"):
        curves_figure(toy_run.result, "loss")
    with pytest.raises(pk.NotFound, match="reported: score, theta0, theta1"):
        plot(toy_run.result, tmp_path, paths=("x", "y"))
    with pytest.raises(pk.ConfigError, match="png, svg, pdf"):
        plot(toy_run.result, tmp_path, formats=["gif"])


def _pbtkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbtkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_pbtkit_plot_writes_the_images(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit(
        "plot", "--storage", toy_run.storage, "--experiment", "toy", "--out", "images",
        "--paths", "theta0,theta1", "--format", "png",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        f"{stem}.png" for stem in STEMS
    )
    assert out.stdout.split() == [f"images/{stem}.png" for stem in STEMS]


def bowl(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The toy's objective on grids, for --contours."""
    return 1.2 - x**2 - y**2


def test_pbtkit_plot_draws_contours_of_a_function(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit(
        "plot", "-s", toy_run.storage, "--out", "img", "--format", "svg",
        "--paths", "theta0,theta1", "--contours", "tests.viz.test_plots:bowl",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    paths = (tmp_path / "img" / "paths.svg").read_text()
    assert "quadratic fit" not in paths  # the colour bar names the metric alone
    out = _pbtkit("plot", "-s", toy_run.storage, "--contours", "x:y", cwd=tmp_path)
    assert out.returncode == 2
    assert "give --paths X,Y too" in out.stderr


def test_pbtkit_plot_refuses_what_is_not_there(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit("plot", "--storage", "missing.db", cwd=tmp_path)
    assert out.returncode == 2
    assert "there is no database at" in out.stderr
    assert not (tmp_path / "missing.db").exists()  # nothing was created
    out = _pbtkit("plot", "--storage", toy_run.storage, "-e", "nope", cwd=tmp_path)
    assert out.returncode == 2
    assert "no experiment named 'nope'" in out.stderr
    assert "(known: toy)" in out.stderr
    out = _pbtkit("plot", "--storage", toy_run.storage, "--paths", "theta0", cwd=tmp_path)
    assert out.returncode == 2
    assert "two metric names" in out.stderr


def test_without_matplotlib_the_message_names_the_extra(
    toy_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, module, None)  # importing it now fails
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[plot\]'"):
        plot(toy_run.result, tmp_path)
