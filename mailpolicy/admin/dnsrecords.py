"""The DNS records a mail domain should publish: MX, SPF, and `_dmarc` TXT when DMARC is on."""

from __future__ import annotations

import ipaddress
from typing import Any

from mailpolicy.auth import publish
from mailpolicy.config import Config
from mailpolicy.core.model import Domain


def records(cfg: Config, domain: Domain) -> list[dict[str, Any]]:
    """Records as {name, type, value, purpose}; names are absolute (trailing dot)."""
    name = domain.name + "."
    mx_host = cfg.client_settings.smtp.host or cfg.hostname
    out: list[dict[str, Any]] = [
        {"name": name, "type": "MX", "value": f"10 {mx_host.rstrip('.')}.",
         "purpose": "mail for the domain is delivered to this server"},
    ]
    if domain.outbound_ip:
        ip = ipaddress.ip_address(domain.outbound_ip)
        mech = "ip4" if ip.version == 4 else "ip6"
        out.append({"name": name, "type": "TXT", "value": f"v=spf1 {mech}:{ip} mx ~all",
                    "purpose": "SPF: the address this domain's mail leaves from"})
    if domain.dmarc:
        out.append({"name": publish.record_name(domain), "type": "TXT",
                    "value": publish.dmarc_record(domain, cfg),
                    "purpose": "DMARC policy for mail claiming to be from this domain"})
    return out


def zone_lines(recs: list[dict[str, Any]]) -> list[str]:
    """Records in zone-file syntax (TXT values quoted)."""
    lines = []
    for r in recs:
        value = f'"{r["value"]}"' if r["type"] == "TXT" else r["value"]
        lines.append(f'{r["name"]}\tIN\t{r["type"]}\t{value}')
    return lines
