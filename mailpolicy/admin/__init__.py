"""Admin API: HTTP/JSON over a Unix socket, peer-credential authorisation, OpenAPI document."""

from .server import AdminServer, start

__all__ = ["AdminServer", "start"]
