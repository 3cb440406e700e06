"""The pieces every logger shares: values as curve points, what an exploit changed."""

from __future__ import annotations

from pbtkit.loggers._base import (
    INACTIVE,
    changed_hparams,
    describe_changes,
    hparam_value,
    sanitize_key,
)

SPACE = {"act": {"type": "choice", "values": ["relu", "tanh"]}, "lr": {"type": "loguniform"}}


def test_numbers_are_their_own_point_and_categories_their_index() -> None:
    assert hparam_value("lr", 0.01, SPACE) == (0.01, None)
    assert hparam_value("flag", True, SPACE) == (1.0, None)
    assert hparam_value("act", "tanh", SPACE) == (1.0, "tanh")
    assert hparam_value("act", "gelu", SPACE) == (None, "gelu")  # not in the domain: no point
    assert hparam_value("other", "x", SPACE) == (None, "x")


def test_an_inactive_hyperparameter_is_a_change_not_an_error() -> None:
    old = {"opt": "sgd", "momentum": 0.9, "lr": 0.1}
    new = {"opt": "adam", "lr": 0.1}  # momentum is inactive under adam
    assert changed_hparams(old, new) == [("opt", "sgd", "adam"), ("momentum", 0.9, INACTIVE)]
    assert describe_changes(old, new) == "opt sgd -> adam, momentum 0.9 -> inactive"
    assert describe_changes(new, old) == "opt adam -> sgd, momentum inactive -> 0.9"
    assert describe_changes(new, dict(new)) == "same hyperparameters"
    assert changed_hparams({"x": None}, {}) == [("x", None, INACTIVE)]  # None is a value


def test_keys_keep_only_what_trackers_accept() -> None:
    assert sanitize_key("<img src=x>", "-_./ ") == "_img src_x_"
    assert sanitize_key("", "") == "_"
