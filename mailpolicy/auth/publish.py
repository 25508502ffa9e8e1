"""The domain's own `_dmarc` TXT record: its text, and RFC 2136 (TSIG) publish/remove."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import dns.asyncquery
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from mailpolicy.config import Config, Dmarc, split_hostport
from mailpolicy.core.dkimkey import DkimKey
from mailpolicy.core.model import Domain

RECORD_TTL = 3600
UPDATE_TIMEOUT = 10.0
POLICIES = ("none", "quarantine", "reject")


class PublishError(Exception):
    """The update server refused or did not answer; the message says why."""


def dmarc_record(domain: Domain, cfg: Config | None = None) -> str:
    """The `_dmarc.<domain>` TXT value: `v=DMARC1; p=…` plus rua/adkim/aspf when set.

    Per-domain fields win; otherwise dmarc.default_policy / dmarc.default_rua from the config."""
    defaults = cfg.dmarc if cfg is not None else Dmarc()
    policy = domain.dmarc_policy if domain.dmarc_policy in POLICIES else defaults.default_policy
    tags = ["v=DMARC1", f"p={policy}"]
    rua = domain.dmarc_rua or defaults.default_rua
    if rua:
        uris = [u.strip() for u in rua.split(",") if u.strip()]
        tags.append("rua=" + ",".join(u if u.lower().startswith("mailto:") else f"mailto:{u}"
                                      for u in uris))
    if domain.dmarc_adkim == "s":
        tags.append("adkim=s")
    if domain.dmarc_aspf == "s":
        tags.append("aspf=s")
    return "; ".join(tags)


def record_name(domain: Domain) -> str:
    return f"_dmarc.{domain.name.rstrip('.')}."


def _zone(cfg: Config, domain: Domain) -> dns.name.Name:
    zone = cfg.dmarc.update_zone or domain.name
    return dns.name.from_text(zone.rstrip(".") + ".")


def _txt_strings(text: str) -> str:
    """Zone-file form: quoted strings of at most 255 bytes."""
    raw = text.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for c in chunks)


def _message(cfg: Config, zone: dns.name.Name) -> dns.update.UpdateMessage:
    kw: dict[str, Any] = {}
    if cfg.dmarc.tsig_name:
        keyring = dns.tsigkeyring.from_text({cfg.dmarc.tsig_name: cfg.dmarc.tsig_secret})
        kw = {"keyring": keyring, "keyname": cfg.dmarc.tsig_name,
              "keyalgorithm": dns.name.from_text(cfg.dmarc.tsig_algorithm)}
    return dns.update.UpdateMessage(zone, **kw)


def _inside(name: dns.name.Name, zone: dns.name.Name) -> None:
    if not name.is_subdomain(zone):
        raise PublishError(f"{name} is not inside the update zone {zone}")


def build_update(cfg: Config, domain: Domain, publish: bool) -> dns.update.UpdateMessage:
    """The RFC 2136 message: replace the `_dmarc` TXT set, or delete it."""
    zone = _zone(cfg, domain)
    name = dns.name.from_text(record_name(domain))
    _inside(name, zone)
    upd = _message(cfg, zone)
    rel = name.relativize(zone)
    if publish:
        upd.replace(rel, RECORD_TTL, "TXT", _txt_strings(dmarc_record(domain, cfg)))
    else:
        upd.delete(rel, "TXT")
    return upd


def build_dkim_update(cfg: Config, domain: str, keys: Iterable[DkimKey],
                      now: float) -> dns.update.UpdateMessage:
    """The RFC 2136 message: the TXT set of each published selector replaced, each retired
    selector's deleted."""
    zone = dns.name.from_text((cfg.dmarc.update_zone or domain).rstrip(".") + ".")
    upd = _message(cfg, zone)
    for k in keys:
        name = dns.name.from_text(f"{k.selector}._domainkey.{domain.rstrip('.')}.")
        _inside(name, zone)
        rel = name.relativize(zone)
        if k.published(now):
            value = f"v=DKIM1; k={k.algorithm}; p={k.public_key}"
            upd.replace(rel, RECORD_TTL, "TXT", _txt_strings(value))
        else:
            upd.delete(rel, "TXT")
    return upd


async def sync_dkim(cfg: Config, domain: str, keys: Iterable[DkimKey],
                    now: float | None = None) -> None:
    """Publish the domain's DKIM selectors at dmarc.update_server (those retired by `now`
    deleted); raises PublishError."""
    await _send(cfg, build_dkim_update(cfg, domain, list(keys),
                                       time.time() if now is None else now),
                f"_domainkey.{domain}")


async def send_update(cfg: Config, domain: Domain, publish: bool) -> None:
    """Publish (DMARC on) or remove (off) the record at dmarc.update_server; raises PublishError."""
    await _send(cfg, build_update(cfg, domain, publish), record_name(domain))


async def _send(cfg: Config, upd: dns.update.UpdateMessage, what: str) -> None:
    host, port = split_hostport(cfg.dmarc.update_server, "dmarc.update_server")
    try:
        resp = await dns.asyncquery.tcp(upd, host, port=port, timeout=UPDATE_TIMEOUT)
    except dns.tsig.PeerError as e:
        raise PublishError(f"update server rejected our TSIG key: {e}") from None
    except (OSError, dns.exception.DNSException) as e:
        raise PublishError(f"update server {host}:{port}: {e}") from None
    if resp.rcode() != dns.rcode.NOERROR:
        raise PublishError(f"update of {what} refused: "
                           f"{dns.rcode.to_text(resp.rcode())}")


async def sync_record(cfg: Config, domain: Domain) -> bool:
    """Make DNS match the domain's DMARC switch. False when no update server is configured."""
    if not cfg.dmarc.update_server:
        return False
    await send_update(cfg, domain, publish=domain.dmarc)
    return True
