"""The admin socket client the CLI uses: HTTP/1.1 + JSON over a Unix socket."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any
from urllib.parse import urlencode

TIMEOUT = 120.0


class Refused(Exception):
    """The action was refused (by the API, the user, or the environment); exit code 1."""


# ---------------------------------------------------------------- transport
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        super().__init__("mailpolicy", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """A thin JSON client of the admin API over its Unix socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Any:
        url = path + ("?" + urlencode(query) if query else "")
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, url, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise Refused(f"cannot reach the admin socket {self.socket_path}: "
                          f"{e.strerror or e}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            raise Refused(f"unexpected answer from the admin API (HTTP {resp.status})") from None
        if resp.status >= 400:
            msg = payload.get("message", f"HTTP {resp.status}") if isinstance(payload, dict) else (
                f"HTTP {resp.status}")
            field = payload.get("field") if isinstance(payload, dict) else ""
            raise Refused(f"{field}: {msg}" if field else msg)
        return payload
