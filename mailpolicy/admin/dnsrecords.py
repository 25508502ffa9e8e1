"""The DNS records a mail domain should publish: MX, SPF with its outbound IP, every DKIM
selector, `_dmarc` when DMARC is on, and RFC 6186/8314 SRV records for mail clients."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from typing import Any

from mailpolicy.auth import publish, signing
from mailpolicy.config import Config, split_hostport
from mailpolicy.core.dkimkey import DkimKey
from mailpolicy.core.model import Domain
from mailpolicy.core.outbound import routable

SUBMISSION_PORTS = {"submission": 587, "submissions": 465}


def _port(value: str, service: str) -> int:
    """The public port of a submission service: its well-known one, or the one configured."""
    if ":" not in value:
        return SUBMISSION_PORTS[service]
    return split_hostport(value, f"submission.{service}")[1]


def srv_records(cfg: Config, domain: str) -> list[dict[str, Any]]:
    """RFC 6186 (+ RFC 8314 `_submissions`): where clients find the services; a service not
    offered is `0 0 0 .`."""
    cs = cfg.client_settings

    def srv(service: str, port: int, host: str, purpose: str) -> dict[str, Any]:
        target = f"{host.rstrip('.')}." if port else "."
        return {"name": f"_{service}._tcp.{domain}.", "type": "SRV",
                "value": f"0 {1 if port else 0} {port} {target}", "purpose": purpose}

    sub = cfg.submission
    out = [
        srv("submission", _port(sub.submission, "submission")
            if sub.enabled and sub.submission else 0, cs.smtp.host,
            "mail clients send here (STARTTLS, SMTP AUTH)"),
        srv("submissions", _port(sub.submissions, "submissions")
            if sub.enabled and sub.submissions else 0, cs.smtp.host,
            "mail clients send here (implicit TLS, SMTP AUTH)"),
    ]
    for proto, ep in (("imap", cs.imap), ("pop3", cs.pop3)):
        tls = ep.security == "ssl"
        out.append(srv(proto + "s", ep.port if tls else 0, ep.host,
                       f"mail clients read mail here ({proto.upper()} over TLS)"))
        out.append(srv(proto, 0 if tls else ep.port, ep.host,
                       f"mail clients read mail here ({proto.upper()}, STARTTLS)"))
    return out


def warnings(domain: Domain) -> list[str]:
    if not domain.outbound_ip:
        return ["the domain has no outbound IP (no routable address in the pool): SPF names "
                "only the MX host; set outbound.ip_pool and `domain edit --ip`"]
    if not routable(domain.outbound_ip):
        return [f"the domain's outbound IP {domain.outbound_ip} is not routable: it is left "
                "out of SPF"]
    return []


def records(cfg: Config, domain: Domain, dkim_keys: Iterable[DkimKey] = (),
            now: float | None = None) -> list[dict[str, Any]]:
    """Records as {name, type, value, purpose}; names are absolute (trailing dot)."""
    now = time.time() if now is None else now
    name = domain.name + "."
    mx_host = cfg.client_settings.smtp.host or cfg.hostname
    out: list[dict[str, Any]] = [
        {"name": name, "type": "MX", "value": f"10 {mx_host.rstrip('.')}.",
         "purpose": "mail for the domain is delivered to this server"},
    ]
    if domain.outbound_ip and routable(domain.outbound_ip):
        ip = ipaddress.ip_address(domain.outbound_ip)
        mech = "ip4" if ip.version == 4 else "ip6"
        out.append({"name": name, "type": "TXT", "value": f"v=spf1 {mech}:{ip} mx ~all",
                    "purpose": "SPF: the address this domain's mail leaves from"})
    else:
        out.append({"name": name, "type": "TXT", "value": "v=spf1 mx ~all",
                    "purpose": "SPF (no routable outbound IP known: the MX host only)"})
    for k in dkim_keys:
        if k.published(now):
            out.append({"name": f"{k.selector}._domainkey.{domain.name}.", "type": "TXT",
                        "value": signing.dns_txt(k.public_key, k.algorithm),  # type: ignore
                        "purpose": f"DKIM public key ({k.algorithm}"
                                   f"{', signing' if k.signs(now) else ', not signing yet'}"
                                   f"{', retiring' if k.retire_at else ''})"})
    if domain.dmarc:
        out.append({"name": publish.record_name(domain), "type": "TXT",
                    "value": publish.dmarc_record(domain, cfg),
                    "purpose": "DMARC policy for mail claiming to be from this domain"})
    return out + srv_records(cfg, domain.name)


def zone_lines(recs: list[dict[str, Any]]) -> list[str]:
    """Records in zone-file syntax (TXT values as quoted strings of at most 255 characters)."""
    lines = []
    for r in recs:
        value = (" ".join(f'"{c}"' for c in signing.txt_chunks(r["value"]))
                 if r["type"] == "TXT" else r["value"])
        lines.append(f'{r["name"]}\tIN\t{r["type"]}\t{value}')
    return lines
