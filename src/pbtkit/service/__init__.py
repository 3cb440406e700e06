"""pbtkit as a service: the HTTP controller, its Python client, and the glass-box API.

The server needs ``pip install 'pbtkit[service]'`` (FastAPI, uvicorn); the client
(:class:`RemoteController`, :class:`PBTClient`) only ``pbtkit[client]`` (httpx,
pydantic). Names are imported when first used, so the client works without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pbtkit.service.client import RemoteController
    from pbtkit.service.glassbox import PBTClient
    from pbtkit.service.server import PBTServer, create_app, serve

__all__ = ["PBTClient", "PBTServer", "RemoteController", "create_app", "serve"]

_HOME = {
    "PBTClient": ("pbtkit.service.glassbox", "client", "PBTClient"),
    "RemoteController": ("pbtkit.service.client", "client", "the HTTP client"),
    "PBTServer": ("pbtkit.service.server", "service", "PBTServer"),
    "create_app": ("pbtkit.service.server", "service", "the HTTP service"),
    "serve": ("pbtkit.service.server", "service", "the HTTP service"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'pbtkit.service' has no attribute {name!r}")
    module, extra, what = _HOME[name]
    from pbtkit._extras import need

    need(extra, what)
    return getattr(importlib.import_module(module), name)
