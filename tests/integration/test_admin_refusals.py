"""Admin API refusals: a non-admin peer gets 403; bad input gets a 4xx naming the field;
a refused request changes nothing in the store or on disk; the OpenAPI document matches."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from test_admin_support import AdminEnv, admin_server, needs_root, raw_call_as

from mailpolicy.admin.routes import openapi_document
from mailpolicy.admin.server import make_app

LONG = "x" * 300


@pytest.fixture
async def admin_env() -> AsyncIterator[AdminEnv]:
    async with admin_server() as env:
        yield env


async def _populate(env: AdminEnv) -> None:
    await env.ok("POST", "/v1/domains", {"name": "example.com"})
    await env.ok("POST", "/v1/domains", {"name": "other.example"})
    await env.ok("POST", "/v1/mailboxes", {"address": "joe@example.com", "aliases": ["j"],
                                            "password": "joe-password-1"})
    await env.ok("POST", "/v1/mailboxes", {"address": "ann@example.com"})
    # things that point at ann and at joe's alias j (issue #13: their deletion is refused)
    await env.ok("POST", "/v1/domains", {"name": "fwd.example", "default_action": "redirect",
                                         "redirect_to": "ann@example.com"})
    await env.ok("POST", "/v1/domains", {"name": "same.example",
                                         "default_action": "redirect-domain",
                                         "redirect_to": "example.com"})
    await env.ok("POST", "/v1/mailboxes", {"address": "boss@other.example", "no_save": True,
                                            "copies_to": ["j@example.com"]})
    await env.ok("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
                 {"message": "away", "enabled": True})
    env.deliver("joe@example.com", 123)


# (method, path, body or raw bytes, expected status, expected field)
BAD = [
    ("POST", "/v1/domains", {"name": "bad_domain"}, 422, "name"),
    ("POST", "/v1/domains", {"name": "../etc"}, 422, "name"),
    ("POST", "/v1/domains", {"name": "a\x00b.example"}, 422, "name"),
    ("POST", "/v1/domains", {"name": ("a" * 63 + ".") * 5 + "com"}, 422, "name"),
    ("POST", "/v1/domains", {"name": "example.com"}, 409, "name"),
    ("POST", "/v1/domains", {"name": "new.example", "owner": "a\x00b"}, 422, "owner"),
    ("POST", "/v1/domains", {"name": "new.example", "owner": LONG}, 422, "owner"),
    ("POST", "/v1/domains", {"name": "new.example", "outbound_ip": "10.9.9.9"}, 422,
     "outbound_ip"),
    ("POST", "/v1/domains", {"name": "new.example", "default_action": "bounce"}, 422,
     "default_action"),
    ("POST", "/v1/domains", {"name": "new.example", "default_action": "redirect"}, 422,
     "redirect_to"),
    ("POST", "/v1/domains", {"name": "new.example", "tls_cert": "/nonexistent/c.pem",
                             "tls_key": "/nonexistent/k.pem"}, 422, "tls_cert"),
    ("POST", "/v1/domains", {"name": "new.example", "dmarc": "yes"}, 422, "dmarc"),
    ("POST", "/v1/domains", {"name": "new.example", "colour": "red"}, 422, "colour"),
    ("PATCH", "/v1/domains/example.com", {"name": "renamed.example"}, 422, "name"),
    ("PATCH", "/v1/domains/example.com", {"dmarc_rua": "not an address"}, 422, "dmarc_rua"),
    ("PATCH", "/v1/domains/nonexistent.example", {"owner": "x"}, 404, "domain"),
    ("DELETE", "/v1/domains/example.com", None, 400, "confirm"),
    ("POST", "/v1/mailboxes", {"address": "Bad Name@example.com"}, 422, "name"),
    ("POST", "/v1/mailboxes", {"address": "../x@example.com"}, 422, "name"),
    ("POST", "/v1/mailboxes", {"address": "a..b@example.com"}, 422, "name"),
    ("POST", "/v1/mailboxes", {"address": "x\x00y@example.com"}, 422, "address"),
    ("POST", "/v1/mailboxes", {"address": LONG + "@example.com"}, 422, "address"),
    ("POST", "/v1/mailboxes", {"address": "x" * 65 + "@example.com"}, 422, "name"),
    ("POST", "/v1/mailboxes", {"address": "new@nowhere.example"}, 422, "domain"),
    ("POST", "/v1/mailboxes", {"address": "joe@example.com"}, 409, "name"),
    ("POST", "/v1/mailboxes", {"address": "j@example.com"}, 409, "name"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "aliases": ["j"]}, 409,
     "aliases"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "aliases": ["ann"]}, 409,
     "aliases"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "aliases": ["../up"]}, 422,
     "aliases"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "no_save": True}, 422, "no_save"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "max_size": "lots"}, 422,
     "max_size"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "copies_to": ["a b@x"]}, 422,
     "copies_to"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "password": "pw\nx"}, 422,
     "password"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"name": "joseph"}, 422, "name"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"domain": "other.example"}, 422, "domain"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"aliases": ["ann"]}, 409, "aliases"),
    ("PATCH", "/v1/mailboxes/ann@example.com", {"aliases": ["j"]}, 409, "aliases"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"no_save": True}, 422, "no_save"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"enabled": "no"}, 422, "enabled"),
    ("PATCH", "/v1/mailboxes/nobody@example.com", {"enabled": True}, 404, "address"),
    ("PATCH", "/v1/mailboxes/joe@example.com", b"{not json", 400, ""),
    ("PATCH", "/v1/mailboxes/joe@example.com", b"[1, 2]", 400, ""),
    ("DELETE", "/v1/mailboxes/joe@example.com", None, 400, "confirm"),
    ("DELETE", "/v1/mailboxes/joe@example.com?confirm=false", None, 400, "confirm"),
    ("POST", "/v1/mailboxes/joe@example.com/clear", {"confirm": False}, 400, "confirm"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
     {"from": "Joe <joe@example.com>\r\nBcc: victim@x.example"}, 422, "from"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder", {"subject": "a\r\nb"}, 422,
     "subject"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder", {"message": "a\x00b"}, 422,
     "message"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
     {"start": "2026-02-01", "end": "2026-01-01"}, 422, "end"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder", {"start": "someday"}, 422, "start"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder", {"interval_days": 0}, 422,
     "interval_days"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
     {"attachment": {"filename": "../../etc/passwd", "data": "aGk="}}, 422, "attachment"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
     {"attachment": {"filename": "a.txt", "data": "!!!not base64"}}, 422, "attachment"),
    ("PUT", "/v1/mailboxes/joe@example.com/autoresponder",
     {"attachment": {"filename": "big.bin",
                     "data": base64.b64encode(b"\0" * (1024 + 1)).decode()}}, 413, "attachment"),
    ("GET", "/v1/mailboxes?domain=nowhere.example", None, 404, "domain"),
    ("GET", "/v1/mailboxes?domain=../x", None, 422, "domain"),
    ("GET", "/v1/domains/..%2Fetc", None, 422, "domain"),
    ("GET", "/v1/mailboxes/..%2F..%2Fetc@example.com", None, 404, "address"),
    ("GET", "/v1/audit?limit=0", None, 422, "limit"),
    ("POST", "/v1/mailboxes/joe@example.com/login-token/x", None, 404, ""),
    ("PUT", "/v1/domains", None, 405, ""),
    # issue #13: nothing may be provisioned that accepts mail and then cannot deliver it
    ("POST", "/v1/domains", {"name": "new.example", "default_action": "redirect",
                             "redirect_to": "nobody@example.com"}, 422, "redirect_to"),
    ("POST", "/v1/domains", {"name": "new.example", "default_action": "redirect",
                             "redirect_to": "postmaster@new.example"}, 422, "redirect_to"),
    ("POST", "/v1/domains", {"name": "new.example", "default_action": "redirect-domain",
                             "redirect_to": "not-hosted.example"}, 422, "redirect_to"),
    ("PATCH", "/v1/domains/example.com", {"default_action": "redirect-domain",
                                          "redirect_to": "same.example"}, 422, "redirect_to"),
    ("POST", "/v1/domains", {"name": "new.example", "postmaster": "nobody@example.com"}, 422,
     "postmaster"),
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "copies_to": ["nobody"]}, 422,
     "copies_to"),
    ("PATCH", "/v1/mailboxes/ann@example.com", {"copies_to": ["x@same.example"]}, 422,
     "copies_to"),
    ("DELETE", "/v1/mailboxes/ann@example.com?confirm=true", None, 409, "address"),
    ("DELETE", "/v1/mailboxes/joe@example.com?confirm=true", None, 409, "address"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"aliases": []}, 409, "aliases"),
    ("DELETE", "/v1/domains/example.com?confirm=true", None, 409, "name"),  # fwd, same, boss
    ("POST", "/v1/mailboxes", {"address": "new@example.com", "password": "short"}, 422,
     "password"),
    ("PATCH", "/v1/mailboxes/joe@example.com", {"password": "joe@example.com"}, 422,
     "password"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def populated() -> AsyncIterator[AdminEnv]:
    """One populated server for all refusal cases (each case proves it changed nothing)."""
    async with admin_server(limits={"attachment_max": 1024}) as env:
        await _populate(env)
        yield env


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("method", "path", "body", "status", "field"), BAD,
                         ids=[f"{i}-{b[0]}-{b[4] or b[3]}" for i, b in enumerate(BAD)])
async def test_bad_input_names_the_field_and_changes_nothing(
        populated: AdminEnv, method: str, path: str, body: object, status: int,
        field: str) -> None:
    env = populated
    before = await env.snapshot()
    if isinstance(body, bytes):
        got, err = await env.call(method, path, raw=body)
    else:
        got, err = await env.call(method, path, body)
    assert got == status, err
    assert set(err) == {"error", "message", "field"} and err["message"]
    assert err["field"] == field, err
    assert await env.snapshot() == before


async def test_oversized_body_is_refused(admin_env: AdminEnv) -> None:
    before = await admin_env.snapshot()
    huge = json.dumps({"name": "x.example", "owner": "y" * (10 * 1024 * 1024)}).encode()
    status, err = await admin_env.call("POST", "/v1/domains", raw=huge)
    assert status == 413 and err["error"] == "too_large"
    assert await admin_env.snapshot() == before


@needs_root
async def test_non_admin_peer_is_refused(admin_env: AdminEnv) -> None:
    env = admin_env
    await _populate(env)
    before = await env.snapshot()
    # with the socket's 0660 mode another user cannot even connect
    res = await raw_call_as("nobody", "nogroup", env.socket, "GET", "/v1/domains")
    assert res == {"status": "EACCES"}
    # with the file mode opened up, SO_PEERCRED still refuses before any handler
    import os

    os.chmod(env.socket, 0o666)
    for method, path, body in (("GET", "/v1/domains", None),
                               ("POST", "/v1/domains", {"name": "evil.example"}),
                               ("DELETE", "/v1/mailboxes/joe@example.com?confirm=true", None),
                               ("GET", "/v1/no-such-route", None)):
        res = await raw_call_as("nobody", "nogroup", env.socket, method, path, body)
        assert res["status"] == 403, res
        assert res["body"]["error"] == "forbidden" and "nobody" in res["body"]["message"]
    assert await env.snapshot() == before


@needs_root
async def test_admin_group_member_is_allowed() -> None:
    async with admin_server(admin={"group": "nogroup"}) as env:
        import grp
        import os

        st = os.stat(env.socket)
        assert st.st_gid == grp.getgrnam("nogroup").gr_gid
        res = await raw_call_as("nobody", "nogroup", env.socket, "POST", "/v1/domains",
                                {"name": "group.example"})
        assert res["status"] == 201, res
        rows = await env.store.list_audit(limit=2)  # domain.create, then its DKIM key
        assert (rows[1]["actor"], rows[1]["action"]) == ("nobody", "domain.create")


async def test_openapi_document_matches_the_routes(admin_env: AdminEnv) -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    app = make_app(admin_env.cfg, admin_env.store)
    in_app = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD"}
    in_doc = {(m, p) for p, item in doc["paths"].items() for m in item
              if m in ("get", "put", "post", "patch", "delete")}
    assert in_app == in_doc
    # every operation documents the error shape and every $ref resolves
    schemas = doc["components"]["schemas"]
    text = json.dumps(doc)
    import re

    for ref in re.findall(r'"#/components/schemas/(\w+)"', text):
        assert ref in schemas, ref
    served = await admin_env.ok("GET", "/v1/openapi.json")
    assert served == doc
