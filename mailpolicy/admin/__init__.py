"""Admin API: HTTP/JSON over a Unix socket, peer-credential authorisation, OpenAPI document.

Service. May import: config, core, store, maildir, deploy, auth (publish), runtime layers.
"""

from mailpolicy.admin.server import AdminServer, start

__all__ = ["AdminServer", "start"]
