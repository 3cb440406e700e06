"""How a change of conditional hyperparameters reads: absent on one side is "inactive"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing import event_accumulator

from pbtkit.controller._apply import change_text as _change_text
from pbtkit.loggers._base import RunInfo
from pbtkit.loggers._base import describe_changes as _changes
from pbtkit.loggers.tensorboard import TensorBoardLogger, member_dir

SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
ADAM = {"optimizer": "adam", "lr": 0.02, "beta1": 0.85}


def test_the_event_text_says_what_became_active_and_what_inactive() -> None:
    assert _change_text(SGD, ADAM) == (
        "optimizer: 'sgd' -> 'adam', lr: 0.01 -> 0.02, beta1: inactive -> 0.85, "
        "momentum: 0.9 -> inactive"
    )
    assert _change_text(SGD, SGD) == "no change"
    # a flat space reads as it always did
    assert _change_text({"x": 1, "y": None}, {"x": 2, "y": None}) == "x: 1 -> 2"


def test_the_tensorboard_text_says_the_same() -> None:
    assert _changes(SGD, ADAM) == (
        "optimizer sgd -> adam, lr 0.01 -> 0.02, beta1 inactive -> 0.85, momentum 0.9 -> inactive"
    )
    assert _changes({"x": 0.5}, {"x": 0.5}) == "same hyperparameters"


def test_a_categorical_value_that_comes_back_is_written_again(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    space = {"act": {"type": "choice", "values": ["relu", "tanh"]}}
    logger.open(RunInfo("x", {"space": space}, "score", "max", space, str(tmp_path)))
    trials: list[dict[str, Any]] = [{"act": "relu"}, {}, {"act": "relu"}, {"act": "relu"}]
    for i, hparams in enumerate(trials):  # each trial's first step, then its last
        logger._hparams(0, hparams, 2 * i, first=True)
        logger._hparams(0, hparams, 2 * i + 1, first=False)
    logger.close()
    reader = event_accumulator.EventAccumulator(
        str(member_dir(tmp_path, 0)), size_guidance={event_accumulator.TENSORS: 0}
    )
    reader.Reload()
    written = [e.step for e in reader.Tensors("hparams/act/text_summary")]
    assert written == [0, 4]  # not at 2 (inactive), again at 4, not at 6 (unchanged)
