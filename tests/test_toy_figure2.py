"""The Figure 2 toy (examples/toy_figure2.py) reproduces the paper's ordering."""

from __future__ import annotations

from pbtkit.examples import toy_figure2


def test_figure2_ordering() -> None:
    results = toy_figure2.main(seeds=3, quiet=True)
    grid = results["grid_search"]
    # h fixed: Q = 1.2 - 0.81 - (0.9 * 0.96**100)**2 whatever the seed
    assert grid["min"] == grid["max"] == 0.3898
    # copying theta while keeping its own h, each member shrinks the other's coordinate
    assert results["exploit_only"]["min"] > 1.1
    assert results["pbt"]["mean"] > results["explore_only"]["mean"]
    assert results["pbt"]["mean"] > grid["mean"]
    assert results["pbt"]["min"] > 1.0
