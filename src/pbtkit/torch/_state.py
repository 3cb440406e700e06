"""Nested state (state dicts, extras) as JSON plus a flat table of tensors, and back.

A PyTorch state dict mixes tensors with plain values: an optimizer's state holds
``exp_avg`` tensors under integer parameter ids beside ``param_groups`` of floats, tuples
and booleans; a scheduler's holds lists, infinities and nested state dicts. The safe way
to store it is to split it: every tensor goes into one safetensors file under a readable
key, everything else into JSON, with a reference where each tensor was. Nothing here
unpickles or executes anything; a value that is neither a tensor nor plain data is refused
when saving, with the path to it, instead of being pickled.

JSON markers (a dict with one key beginning with ``$``):
``{"$tensor": key}``, ``{"$ndarray": key}`` (a numpy array, stored as a tensor),
``{"$tuple": [...]}``, ``{"$float": "nan" | "inf" | "-inf"}`` and
``{"$dict": [[key, value], ...]}`` for a dict with keys that are not strings (the integer
parameter ids of an optimizer's state) or that begin with ``$``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pbtkit._exceptions import CheckpointError, ConfigError

__all__ = ["Decoder", "Encoder"]

_MARKERS = ("$tensor", "$ndarray", "$tuple", "$float", "$dict")


class Encoder:
    """Collects tensors under unique keys while turning nested values into JSON."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[tuple[str, int]] = set()

    def _add(self, path: str, tensor: torch.Tensor) -> str:
        if tensor.is_sparse or tensor.layout != torch.strided:
            raise ConfigError(
                f"cannot save {path}: a {tensor.layout} tensor; convert it with .to_dense()"
            )
        value = tensor.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share memory (tied weights, views): copy those.
        storage = (str(value.device), value.untyped_storage().data_ptr())
        if value.numel() and storage in self._storages:
            value = value.clone()
        elif value.numel():
            self._storages.add(storage)
        key, n = path, 1
        while key in self.tensors:
            n += 1
            key = f"{path}~{n}"
        self.tensors[key] = value
        return key

    def encode(self, value: Any, path: str) -> Any:
        """``value`` as JSON, its tensors moved into :attr:`tensors`.

        Raises:
            ConfigError: A value is neither a tensor, a numpy array nor plain data.
        """
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, torch.Tensor):
            return {"$tensor": self._add(path, value)}
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise ConfigError(f"cannot save {path}: a numpy array of Python objects")
            return {"$ndarray": self._add(path, torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"$float": str(value)}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            plain = all(isinstance(k, str) and not k.startswith("$") for k in value)
            if plain:
                return {k: self.encode(v, f"{path}/{k}") for k, v in value.items()}
            pairs = []
            for k, v in value.items():
                if k is not None and not isinstance(k, str | int | float | bool | tuple):
                    raise ConfigError(
                        f"cannot save {path}: a key of type {type(k).__name__} ({k!r})"
                    )
                pairs.append([self.encode(k, f"{path}/key"), self.encode(v, f"{path}/{k}")])
            return {"$dict": pairs}
        raise ConfigError(
            f"cannot save {path}: a {type(value).__module__}.{type(value).__qualname__} is "
            "neither a tensor, a numpy array nor plain data (numbers, strings, lists, dicts), "
            "and pbtkit never pickles; convert it to one of those"
        )


class Decoder:
    """Turns what :class:`Encoder` wrote back into values, tensors taken from a table."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], where: str) -> None:
        self._tensors = tensors
        self._where = where

    def _tensor(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in self._tensors:
            raise CheckpointError(
                f"{self._where}: the JSON names a tensor {key!r} that the safetensors file "
                "does not hold; the checkpoint is damaged"
            )
        return self._tensors[key]

    def decode(self, value: Any) -> Any:
        """The value :meth:`Encoder.encode` was given (tensors on the CPU)."""
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (marker, inner), *_ = value.items()
            if marker == "$tensor":
                return self._tensor(inner)
            if marker == "$ndarray":
                return self._tensor(inner).numpy()
            if marker == "$tuple":
                return tuple(self.decode(v) for v in inner)
            if marker == "$float":
                return float(inner)
            if marker == "$dict":
                return {_hashable(self.decode(k)): self.decode(v) for k, v in inner}
        if any(k in _MARKERS for k in value):
            raise CheckpointError(f"{self._where}: a malformed entry {value!r}")
        return {k: self.decode(v) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key
