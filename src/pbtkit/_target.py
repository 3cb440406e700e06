"""Naming code so that another process can import it (``module:qualname``), and the rule
that says which named code a process may import.

A spec may name code: a custom explore function (``{"type": "custom", "target":
"pkg.mod:fn"}``) today, a plug-in class tomorrow. Reading a spec never imports what it
names; the code is imported when a decision first needs it, and only if the
:class:`ImportPolicy` in force allows it. A process that runs its user's own experiments
trusts its store (the default); ``pbtkit serve`` allows only the packages its operator
named with ``--allow-import`` and never a file path, for specs received over the network
and stored specs alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ConfigError

__all__ = [
    "ImportPolicy",
    "code_references",
    "find_target",
    "import_policy",
    "load_target",
    "target_of",
]


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    """Which code named in a spec this process may import.

    Args:
        packages: Module prefixes whose functions may be imported (``"mypkg"`` allows
            ``mypkg`` and ``mypkg.sub``); None allows anything, file paths included (a
            process running its own user's experiments).
    """

    packages: tuple[str, ...] | None = None

    @classmethod
    def only(cls, packages: Sequence[str]) -> ImportPolicy:
        """A policy that allows the functions of these packages and nothing else."""
        return cls(tuple(str(p) for p in packages))

    def allows(self, target: str) -> bool:
        """Whether ``target`` (``module:qualname``) may be imported."""
        if self.packages is None:
            return True
        module = target.rpartition(":")[0]
        if not module or "/" in module or "\\" in module or module.endswith(".py"):
            return False  # a file path: never, whatever the packages
        return any(module == p or module.startswith(f"{p}.") for p in self.packages)

    def check(self, target: str, where: str = "") -> None:
        """Refuse a target this policy does not allow.

        Raises:
            ConfigError: Saying what was named where, and how to allow it.
        """
        if self.allows(target):
            return
        place = f" at {where}" if where else ""
        raise ConfigError(
            f"this server imports no code named by clients or stored specs (target "
            f"{target!r}{place}): start it with --allow-import PACKAGE to allow functions of "
            "that package; file paths are never accepted"
        )

    def check_spec(self, spec: Any) -> None:
        """Refuse a spec (as JSON) that names code this policy does not allow, wherever
        in the spec it is named.

        Raises:
            ConfigError: For the first such reference.
        """
        for where, target in code_references(spec):
            self.check(target, where)


_TRUSTING = ImportPolicy()
_POLICY: contextvars.ContextVar[ImportPolicy] = contextvars.ContextVar(
    "pbtkit_import_policy",
    default=_TRUSTING,
)


@contextlib.contextmanager
def import_policy(policy: ImportPolicy) -> Iterator[None]:
    """Make ``policy`` the one :func:`load_named` obeys inside the block (this thread)."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def load_named(target: str) -> Callable[..., Any]:
    """Import code a spec names, if the policy in force allows it (see the module doc).

    Raises:
        ConfigError: The policy refuses it, or it cannot be imported.
    """
    _POLICY.get().check(target)
    return load_target(target)


def code_references(spec: Any, where: str = "") -> list[tuple[str, str]]:
    """Every piece of code a spec (as JSON) names, with where: ``[("policy.explore.fallback",
    "pkg.mod:fn"), ...]``.

    Walks the whole spec: a ``target`` string anywhere, and any ``type`` that is an import
    path (``pkg.mod:Class``) rather than a built-in kind, so a reference nested inside
    another strategy's settings is found as surely as one at the top.
    """
    found: list[tuple[str, str]] = []
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            path = f"{where}.{key}" if where else str(key)
            if key in ("target", "type") and isinstance(value, str):
                if key == "target" or ":" in value or "/" in value or "\\" in value:
                    found.append((path, value))
            else:
                found += code_references(value, path)
    elif isinstance(spec, list | tuple):
        for index, item in enumerate(spec):
            found += code_references(item, f"{where}[{index}]")
    return found


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


def _import_module(name: str) -> Any:
    """``importlib.import_module``, finding a module of the current directory as ``python -m``
    does (the ``pbtkit`` command's own folder is on the path, the current one is not)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.partition(".")[0]
        here = Path.cwd()
        if exc.name != top or not ((here / f"{top}.py").is_file() or (here / top).is_dir()):
            raise
        if str(here) not in sys.path:
            sys.path.insert(0, str(here))  # worker processes inherit it (PYTHONPATH)
        return importlib.import_module(name)


def _split(target: str) -> tuple[str, str]:
    module_name, sep, qualname = target.rpartition(":")
    if not sep or not module_name or not qualname:
        raise ConfigError(
            f"target {target!r} must look like 'package.module:function' "
            "or 'path/to/file.py:function'"
        )
    return module_name, qualname


def _is_file(module_name: str) -> bool:
    return module_name.endswith(".py") or os.sep in module_name


def _not_importable(module_name: str, qualname: str, target: str, why: object) -> ConfigError:
    file_form = f"{module_name.replace('.', '/')}.py:{qualname}"
    return ConfigError(
        f"cannot import module {module_name!r} for target {target!r}: {why}. Check the "
        "name and that the module is on the Python path of the worker (the current "
        f"directory counts, as for `python -m`), or name the file: '{file_form}'"
    )


def find_target(target: str) -> None:
    """Check that ``target``'s module or file exists, without importing the module
    itself (its parent packages are imported to find it); :func:`load_target` checks the
    rest.

    Raises:
        ConfigError: The target is malformed, or its module or file cannot be found.
    """
    module_name, qualname = _split(target)
    if _is_file(module_name):
        path = Path(module_name).resolve()
        if not path.is_file():
            raise ConfigError(f"target file {path} does not exist")
        return
    here = Path.cwd()
    top = module_name.partition(".")[0]
    if (here / f"{top}.py").is_file() or (here / top).is_dir():
        return  # found as `python -m` finds it (see _import_module)
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise _not_importable(module_name, qualname, target, exc) from exc
    if found is None:
        raise _not_importable(module_name, qualname, target, f"No module named {module_name!r}")


def load_target(target: str) -> Callable[..., Any]:
    """Import ``module:qualname`` or ``/path/to/file.py:qualname``.

    A file is loaded under a private module name, so its ``if __name__ == "__main__":``
    block does not run again.

    Raises:
        ConfigError: The module, file or attribute cannot be found, or is not callable.
    """
    module_name, qualname = _split(target)
    try:
        if _is_file(module_name):
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
            module = _import_module(module_name)
    except ImportError as exc:
        raise _not_importable(module_name, qualname, target, exc) from exc
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
