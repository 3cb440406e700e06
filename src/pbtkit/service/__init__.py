"""pbtkit as a service: the HTTP controller, its Python client, and the glass-box API.

Needs the ``service`` extra: ``pip install 'pbtkit[service]'``.
"""

from pbtkit.service.client import RemoteController
from pbtkit.service.glassbox import PBTClient
from pbtkit.service.server import PBTServer, create_app, serve

__all__ = ["PBTClient", "PBTServer", "RemoteController", "create_app", "serve"]
