"""The composition: every protocol service the daemon runs, imported explicitly, in start order.

The only module (with the CLI) that imports the services; services never import each other."""

from __future__ import annotations

from mailpolicy.admin import server as admin
from mailpolicy.lmtp import server as lmtp
from mailpolicy.policy import server as policy
from mailpolicy.runtime.service import Service
from mailpolicy.smtp import server as smtp
from mailpolicy.socketmap import server as socketmap

SERVICES: tuple[Service, ...] = (
    Service.pooled("policy", policy.start, lambda limits: limits.policy_workers),
    Service("socketmap", socketmap.start),
    Service("filter", smtp.start),
    Service.pooled("lmtp", lmtp.start, lambda limits: limits.lmtp_workers,
                   bind_inherited=lmtp.bind_inherited),
    Service("admin", admin.start),
)


def by_name(name: str) -> Service:
    """The service called `name` (a worker process is told its service by name)."""
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(f"no service {name!r}")
