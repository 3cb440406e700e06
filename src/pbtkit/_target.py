"""Naming a training function so that another process can import it: ``module:qualname``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ConfigError

__all__ = ["load_target", "target_of"]


def target_of(fn: Callable[..., Any]) -> str:
    """The import path of a module-level function, for worker processes to load.

    A function of a script run as ``__main__`` is named by the script's module name when
    it was started with ``python -m``, else by its file path.

    Raises:
        ConfigError: The function is a lambda or defined inside another function.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise ConfigError(
            f"{fn!r} cannot be imported by worker processes: pass a function defined at the "
            "top level of a module (not a lambda or a nested function), or use executor='thread'"
        )
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            return f"{spec.name}:{qualname}"
        path = getattr(main, "__file__", None)
        if not path:
            raise ConfigError(
                f"{qualname} lives in an interactive session, which worker processes cannot "
                "import; put it in a file, or use executor='thread'"
            )
        return f"{Path(path).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def load_target(target: str) -> Callable[..., Any]:
    """Import ``module:qualname`` or ``/path/to/file.py:qualname``.

    A file is loaded under a private module name, so its ``if __name__ == "__main__":``
    block does not run again.

    Raises:
        ConfigError: The module, file or attribute cannot be found, or is not callable.
    """
    module_name, sep, qualname = target.rpartition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(
            f"target {target!r} must look like 'package.module:function' "
            "or 'path/to/file.py:function'"
        )
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).resolve()
            if not path.is_file():
                raise ConfigError(f"target file {path} does not exist")
            private = f"__pbtkit_target_{abs(hash(str(path)))}"
            module = sys.modules.get(private)
            if module is None:
                spec = importlib.util.spec_from_file_location(private, path)
                if spec is None or spec.loader is None:
                    raise ConfigError(f"cannot load {path} as a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[private] = module
                sys.path.insert(0, str(path.parent))
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r} for target {target!r}: {exc}. Check the "
            "name and that the module is on the Python path of the worker"
        ) from exc
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{module_name!r} has no attribute {qualname!r} (target {target!r})"
            ) from None
    if not callable(obj):
        raise ConfigError(f"target {target!r} is {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]
