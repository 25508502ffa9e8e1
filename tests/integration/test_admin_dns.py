"""DMARC switch through the admin API and CLI: the `_dmarc` TXT record is published to and
removed from a real authoritative server (Knot, RFC 2136 + TSIG); a DNS failure is reported
without losing the saved setting."""

from __future__ import annotations

import socket

from test_admin_support import CLI, ROOT, admin_server, run
from test_dmarc_publish import SECRET, knot, txt_at  # noqa: F401  (Knot fixture)


def _dmarc_cfg(port: int) -> dict:
    return {"update_server": f"127.0.0.1:{port}", "update_zone": "mail.test",
            "tsig_name": "mp-key", "tsig_secret": SECRET}


async def test_dmarc_switch_publishes_and_removes_the_record(knot: int) -> None:  # noqa: F811
    async with admin_server(dmarc=_dmarc_cfg(knot)) as env:
        d = await env.ok("POST", "/v1/domains", {"name": "mail.test", "dmarc": True,
                                                 "dmarc_rua": "agg@mail.test"})
        assert d["dns_update"] == {"ok": True, "error": ""}
        assert await txt_at(knot, "_dmarc.mail.test") == [
            "v=DMARC1; p=none; rua=mailto:agg@mail.test"]
        d = await env.ok("PATCH", "/v1/domains/mail.test", {"dmarc_policy": "reject"})
        assert d["dns_update"]["ok"] is True
        assert await txt_at(knot, "_dmarc.mail.test") == [
            "v=DMARC1; p=reject; rua=mailto:agg@mail.test"]
        # the record the API shows is the one published
        recs = (await env.ok("GET", "/v1/domains/mail.test/dns-records"))["records"]
        assert [r["value"] for r in recs if r["name"] == "_dmarc.mail.test."] == [
            "v=DMARC1; p=reject; rua=mailto:agg@mail.test"]
        # the CLI turns it off: the record is removed
        rc, _out, err = await run([*CLI, "--socket", env.socket, "domain", "edit", "mail.test",
                                   "--no-dmarc"], env={"PYTHONPATH": str(ROOT)})
        assert rc == 0 and "warning" not in err, err
        assert await txt_at(knot, "_dmarc.mail.test") == []
        # changes that do not touch DMARC do not talk to DNS
        d = await env.ok("PATCH", "/v1/domains/mail.test", {"owner": "ann"})
        assert "dns_update" not in d
        await env.ok("PATCH", "/v1/domains/mail.test", {"dmarc": True})
        assert await txt_at(knot, "_dmarc.mail.test") != []
        res = await env.ok("DELETE", "/v1/domains/mail.test?confirm=true")
        assert res["dns_update"]["ok"] is True
        assert await txt_at(knot, "_dmarc.mail.test") == []


async def test_dns_failure_is_reported_and_the_setting_kept() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once closed
    async with admin_server(dmarc=_dmarc_cfg(closed)) as env:
        d = await env.ok("POST", "/v1/domains", {"name": "mail.test", "dmarc": True})
        assert d["dns_update"]["ok"] is False and d["dns_update"]["error"]
        assert (await env.store.get_domain("mail.test")).dmarc is True
        rc, _out, err = await run([*CLI, "--socket", env.socket, "domain", "edit", "mail.test",
                                   "--dmarc-policy", "quarantine"], env={"PYTHONPATH": str(ROOT)})
        assert rc == 0 and "DNS update failed" in err
        assert (await env.store.get_domain("mail.test")).dmarc_policy == "quarantine"
