"""Nothing in pbtkit can unpickle: a scan of the source, and the scan's own tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pbtkit as pk

_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unpickling_risks(source: str, filename: str = "<source>") -> list[str]:
    """Lines of ``source`` that could unpickle data: imports of pickling modules,
    ``allow_pickle`` not literally False, ``torch.load`` without ``weights_only=True``."""
    risks = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            risks += [
                f"{where}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in _UNPICKLERS
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _UNPICKLERS:
                risks.append(f"{where}: from {node.module} import ...")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                risks.append(f"{where}: from torch import load")
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
            if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
                risks.append(f"{where}: allow_pickle is not False")
            name = _dotted(node.func)
            if name == "torch.load" and not _is_constant(keywords.get("weights_only"), True):
                risks.append(f"{where}: torch.load without weights_only=True")
            if name.endswith("read_pickle"):
                risks.append(f"{where}: {name}")
            if name in {"__import__", "importlib.import_module"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and first.value in _UNPICKLERS:
                    risks.append(f"{where}: imports {first.value!r}")
    return risks


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import cloudpickle as cp",
        "from dill import loads",
        "import joblib.numpy_pickle",
        "import shelve, json",
        "from marshal import loads",
        "np.load(path, allow_pickle=True)",
        "np.load(path, allow_pickle=flag)",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "from torch import load",
        "pandas.read_pickle(path)",
        "importlib.import_module('pickle')",
    ],
)
def test_the_scan_finds_unpickling(source: str) -> None:
    assert unpickling_risks(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "np.load(path, allow_pickle=False)",
        "np.load(path)",
        "torch.load(path, weights_only=True)",
        "from pbtkit import pickled_names",
    ],
)
def test_the_scan_lets_safe_loading_pass(source: str) -> None:
    assert unpickling_risks(source) == []


def test_nothing_in_pbtkit_can_unpickle() -> None:
    package = Path(pk.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 20
    risks = [
        risk
        for path in files
        for risk in unpickling_risks(path.read_text(encoding="utf-8"), str(path))
    ]
    assert risks == []
