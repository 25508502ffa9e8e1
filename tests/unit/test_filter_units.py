"""Pure parts of the content filter: XFORWARD, headers, rewrite plan, SRS, reply mapping."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpolicy import config
from mailpolicy.core.directory import Kind, Resolution
from mailpolicy.core.model import DefaultAction, Domain, Mailbox
from mailpolicy.core.srs import Srs, load_secret
from mailpolicy.smtp import xforward as xf
from mailpolicy.smtp.pipeline import Transaction, fold, split_headers
from mailpolicy.smtp.reinject import accepted_reply, refusal_reply
from mailpolicy.smtp.rewrite import already_forwarded, plan_recipients, trace_passes, trace_value
from mailpolicy.smtp.server import has_bare_newline

# ---------------------------------------------------------------- XFORWARD


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    encoded = xf.xtext_encode(text)
    assert all("!" <= c <= "~" and c != "=" for c in encoded)
    try:
        text.encode()
    except UnicodeEncodeError:
        return  # lone surrogates cannot be sent anyway
    assert xf.xtext_decode(encoded) == text


def test_xtext_decode_examples() -> None:
    assert xf.xtext_decode("mail+2Eexample+3Dx") == "mail.example=x"
    with pytest.raises(xf.XForwardError):
        xf.xtext_decode("bad+zz")
    with pytest.raises(xf.XForwardError):
        xf.xtext_decode("a=b")


def test_parse_attributes_case_insensitive_and_checked() -> None:
    attrs = xf.parse("name=mx.ext.test ADDR=IPV6:2001:db8::1 Port=25 helo=+5Bx+5D source=remote")
    assert attrs == {"NAME": "mx.ext.test", "ADDR": "IPV6:2001:db8::1", "PORT": "25",
                     "HELO": "[x]", "SOURCE": "REMOTE"}
    assert xf.parse("ADDR=[UNAVAILABLE]") == {"ADDR": "[UNAVAILABLE]"}
    for bad in ("", "FOO=1", "ADDR=not-an-ip", "PORT=99999", "SOURCE=x", "NAME",
                "NAME=" + "a" * 256):
        with pytest.raises(xf.XForwardError):
            xf.parse(bad)


def test_commands_only_announced_and_short() -> None:
    attrs = {"NAME": "n" * 255, "ADDR": "192.0.2.1", "HELO": "h" * 255, "IDENT": "Q1",
             "PORT": "1234", "SOURCE": "REMOTE", "PROTO": "ESMTP"}
    allowed = xf.announced("NAME ADDR HELO IDENT")
    lines = xf.commands(attrs, allowed)
    assert all(len(line) + 2 <= 512 for line in lines)
    sent = xf.parse(" ".join(line.split(" ", 1)[1] for line in lines))
    assert sent == {k: attrs[k] for k in ("NAME", "ADDR", "HELO", "IDENT")}
    assert xf.commands(attrs, xf.announced(None)) == []


def test_update_and_client_identity() -> None:
    a = xf.update(None, {"ADDR": "192.0.2.7", "HELO": "mx.ext.test"})
    a = xf.update(a, {"HELO": "[UNAVAILABLE]"})
    assert xf.client_address(a) == "192.0.2.7" and xf.value(a, "HELO") is None
    assert xf.client_address({"ADDR": "IPV6:::1"}) == "::1"


# ---------------------------------------------------------------- headers / transaction


def test_split_headers_and_strip_keep_body_bytes() -> None:
    body = b"\r\n.line\r\n\xff\xfe8bit\r\n"
    msg = b"From: a@x.test\r\nX-Bad: 1\r\n  folded\r\nSubject: s\r\n" + body
    fields, at = split_headers(msg)
    assert [f.name for f in fields] == ["from", "x-bad", "subject"]
    assert fields[1].value == "1  folded"
    tx = Transaction("s@x.test", [], ["r@y.test"], {}, msg)
    tx.strip_headers.add("x-bad")
    tx.add_header("X-New", "v")
    assert tx.message_bytes() == b"X-New: v\r\nFrom: a@x.test\r\nSubject: s\r\n" + body
    assert tx.message_bytes().endswith(msg[at:])
    tx2 = Transaction("", [], ["r@y.test"], {}, msg)
    tx2.strip_if.append(lambda h: h.name == "subject")
    assert b"Subject" not in tx2.message_bytes() and tx2.message_bytes().endswith(body)


def test_header_block_without_blank_line_and_headerless_message() -> None:
    assert split_headers(b"\r\nbody\r\n") == ([], 0)
    fields, at = split_headers(b"From: a\r\nnot a header line\r\n")
    assert [f.name for f in fields] == ["from"] and at == len(b"From: a\r\n")


def test_fold_long_values_and_refuse_crlf() -> None:
    raw = fold("X-T", " ".join(f"<a{i}@example.test>" for i in range(20)))
    assert all(len(line) <= 80 for line in raw.split(b"\r\n"))
    assert raw.endswith(b"\r\n") and b"\r\n " in raw
    with pytest.raises(ValueError):
        fold("X-T", "a\r\nInjected: yes")


def test_envelopes_group_by_sender_original_first() -> None:
    tx = Transaction("s@ext.test", [], ["x@out.test", "a@ours.test", "y@out.test"], {}, b"")
    tx.senders = {"x@out.test": "SRS0=h=t=ext.test=s@ours.test",
                  "y@out.test": "SRS0=h=t=ext.test=s@ours.test"}
    assert tx.envelopes() == [("s@ext.test", ["a@ours.test"]),
                              ("SRS0=h=t=ext.test=s@ours.test", ["x@out.test", "y@out.test"])]


# ---------------------------------------------------------------- rewrite plan (pure)

D = Domain(name="ours.test")
DISCARD = Domain(name="discard.test", default_action=DefaultAction.DISCARD)


def mbox(name: str, copies: tuple[str, ...] = (), no_save: bool = False,
         enabled: bool = True, domain: str = "ours.test") -> Mailbox:
    return Mailbox(name=name, domain=domain, copies_to=copies, no_save=no_save, enabled=enabled)


def res(address: str, mb: Mailbox | None = None, *, via_alias: bool = False,
        kind: Kind | None = None, domain: Domain = D, **kw: object) -> Resolution:
    if mb is not None:
        return Resolution(address, Kind.MAILBOX, domain=domain, mailbox=mb, via_alias=via_alias,
                          **kw)  # type: ignore[arg-type]
    return Resolution(address, kind or Kind.FOREIGN, domain=domain if kind else None,
                      **kw)  # type: ignore[arg-type]


def test_plan_alias_to_mailbox() -> None:
    p = plan_recipients(["info@ours.test"], {"info@ours.test": res("info@ours.test", mbox("bob"),
                                                                    via_alias=True)})
    assert p.recipients == ["bob@ours.test"] and not p.external


def test_plan_copies_deduplicated_across_message() -> None:
    a = mbox("a", ("c@ours.test", "x@ext.test"))
    b = mbox("b", ("x@ext.test", "c@ours.test"))
    c = mbox("c")
    r = {"a@ours.test": res("a@ours.test", a), "b@ours.test": res("b@ours.test", b),
         "c@ours.test": res("c@ours.test", c), "x@ext.test": res("x@ext.test")}
    p = plan_recipients(["a@ours.test", "b@ours.test", "c@ours.test"], r)
    assert p.recipients == ["a@ours.test", "c@ours.test", "x@ext.test", "b@ours.test"]
    assert p.external == {"x@ext.test"} and p.forwarded_for == ["a@ours.test", "b@ours.test"]
    assert p.forwarded_by == {"x@ext.test": "ours.test"}  # its route: ours.test's address


def test_plan_do_not_save_only_copies() -> None:
    a = mbox("a", ("x@ext.test",), no_save=True)
    p = plan_recipients(["a@ours.test"], {"a@ours.test": res("a@ours.test", a),
                                          "x@ext.test": res("x@ext.test")})
    assert p.recipients == ["x@ext.test"]


def test_plan_do_not_save_whose_copies_lead_nowhere_is_deferred() -> None:
    """LMTP stores nothing for a do-not-save mailbox: with no copy reaching anything (the
    store changed after RCPT) the message must wait (4xx), never be accepted and lost."""
    a = mbox("a", ("gone@discard.test",), no_save=True)
    r = {"a@ours.test": res("a@ours.test", a),
         "gone@discard.test": res("gone@discard.test", kind=Kind.UNKNOWN, domain=DISCARD)}
    p = plan_recipients(["a@ours.test"], r)
    assert p.recipients == [] and p.nowhere == ["a@ours.test"]


def test_plan_unknown_in_discard_domain_removed() -> None:
    r = {"x@discard.test": res("x@discard.test", kind=Kind.UNKNOWN, domain=DISCARD),
         "ok@ext.test": res("ok@ext.test")}
    p = plan_recipients(["x@discard.test", "ok@ext.test"], r)
    assert p.recipients == ["ok@ext.test"] and p.events[0].action == "discard"
    p2 = plan_recipients(["x@discard.test"], r)
    assert p2.recipients == [] and p2.events[-1].action == "drop"


def test_plan_redirect_follows_final_and_external_is_marked() -> None:
    red = Domain(name="red.test", default_action=DefaultAction.REDIRECT, redirect_to="z@ext.test")
    chain = Resolution("u@red.test", Kind.UNKNOWN, domain=red,
                       redirect=Resolution("z@ext.test", Kind.FOREIGN))
    p = plan_recipients(["u@red.test"], {"u@red.test": chain})
    assert p.recipients == ["z@ext.test"] and p.external == {"z@ext.test"}
    assert p.forwarded_for == ["u@red.test"] and p.forwarded_by == {"z@ext.test": "red.test"}
    # already redirected once (trace header): not again, and not a loss (it went there)
    p2 = plan_recipients(["u@red.test"], {"u@red.test": chain}, {"u@red.test"})
    assert p2.recipients == [] and p2.events[0].action == "loop"


def test_plan_redirect_domain_to_local_mailbox_and_loop_deferred() -> None:
    rd = Domain(name="old.test", default_action=DefaultAction.REDIRECT_DOMAIN,
                redirect_to="ours.test")
    chain = Resolution("bob@old.test", Kind.UNKNOWN, domain=rd,
                       redirect=res("bob@ours.test", mbox("bob")))
    assert plan_recipients(["bob@old.test"], {"bob@old.test": chain}).recipients == [
        "bob@ours.test"]
    looped = Resolution("x@old.test", Kind.UNKNOWN, domain=rd, loop=True,
                        redirect=Resolution("x@new.test", Kind.UNKNOWN, domain=rd, loop=True))
    p = plan_recipients(["x@old.test"], {"x@old.test": looped})
    assert p.recipients == [] and p.events[0].action == "defer"  # never accepted-and-dropped
    assert p.nowhere == ["x@old.test"]


def test_plan_forwarding_loop_between_two_mailboxes_ends() -> None:
    a, b = mbox("a", ("b@ours.test",)), mbox("b", ("a@ours.test",))
    r = {"a@ours.test": res("a@ours.test", a), "b@ours.test": res("b@ours.test", b)}
    assert plan_recipients(["a@ours.test"], r).recipients == ["a@ours.test", "b@ours.test"]


def test_plan_loop_guard_from_trace_keeps_do_not_save_mail() -> None:
    a = mbox("a", ("x@ext.test",), no_save=True)
    r = {"a@ours.test": res("a@ours.test", a), "x@ext.test": res("x@ext.test")}
    p = plan_recipients(["a@ours.test"], r, {"a@ours.test"})
    assert p.recipients == ["a@ours.test"] and p.events[0].action == "loop"


def test_plan_unchanged_foreign_invalid_and_disabled() -> None:
    r = {"x@ext.test": res("x@ext.test"), "junk": res("junk", kind=Kind.INVALID),
         "off@ours.test": res("off@ours.test", mbox("off", ("x@ext.test",), enabled=False))}
    p = plan_recipients(["x@ext.test", "junk", "off@ours.test"], r)
    assert p.recipients == ["x@ext.test", "junk", "off@ours.test"] and not p.external


def test_trace_header_facts() -> None:
    tx = Transaction("", [], [], {}, b"".join([
        fold("X-Mailpolicy-Trace", trace_value("mx.ours.test", "A1", ["a@ours.test"])),
        fold("X-Mailpolicy-Trace", trace_value("other.test", "B", ["b@ours.test"])),
        b"Delivered-To: C@ours.test\r\n\r\nbody\r\n"]))
    assert trace_passes(tx.headers, "mx.ours.test") == 1
    assert already_forwarded(tx.headers) == {"a@ours.test", "b@ours.test", "c@ours.test"}


# ---------------------------------------------------------------- SRS, replies


def test_srs_secret_created_once_0600(tmp_path: object) -> None:
    cfg = config.from_dict({"paths": {"state_dir": str(tmp_path)}})
    s1 = load_secret(cfg)
    path = os.path.join(str(tmp_path), "srs.secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(cfg) == s1 and len(s1) >= 32
    cfg2 = config.from_dict({"filter": {"srs_secret": "given"}})
    assert load_secret(cfg2) == "given"


def test_srs_forward_reverse_and_forgeries() -> None:
    srs = Srs("secret", "Fwd.Ours.Test")
    a = srs.forward("alice@ext.test")
    assert a is not None and a.endswith("@fwd.ours.test") and srs.is_ours(a)
    assert srs.reverse(a) == "alice@ext.test" and srs.reverse(a.lower()) == "alice@ext.test"
    assert srs.reverse("SRS0=AAAA=AB=ext.test=alice@fwd.ours.test") is None
    assert srs.reverse("alice@fwd.ours.test") is None
    assert srs.reverse(a.replace("fwd.ours.test", "other.test")) is None
    srs1 = srs.forward("SRS0=abcd=AB=first.test=bob@hop1.test")
    assert srs1 is not None and srs1.startswith("SRS1")
    assert srs.reverse(srs1) == "SRS0=abcd=AB=first.test=bob@hop1.test"


def test_refusal_mapping_after_and_before_queue() -> None:
    assert refusal_reply("RCPT", 550, "5.1.1 <x>: no", "after-queue").code == 451
    assert str(refusal_reply("RCPT", 550, "5.1.1 no", "after-queue")).startswith("451 4.1.1")
    assert refusal_reply("RCPT", 550, "5.1.1 no", "before-queue").code == 550
    assert refusal_reply("DATA", 554, "5.6.0 content rejected", "after-queue").code == 554
    assert refusal_reply("MAIL", 452, "4.3.1 full", "after-queue").dsn == "4.3.1"
    assert refusal_reply("XFORWARD", 500, "nope", "after-queue").dsn == "4.0.0"


def test_bare_newlines_and_enhanced_codes() -> None:
    assert not has_bare_newline(b"a\r\nb\r\n")
    assert has_bare_newline(b"a\nb\r\n") and has_bare_newline(b"a\rb\r\n")
    # enhanced codes: tests/unit/test_lmtp_rules.py (one table, core.replies)


def test_accepted_reply_does_not_repeat_the_next_hops_status() -> None:
    assert str(accepted_reply(["2.0.0 Ok: queued as 4Xyz"])) == "250 2.0.0 Ok: queued as 4Xyz"
    assert (str(accepted_reply(["2.0.0 Ok: queued as A", "2.0.0 Ok: queued as B"]))
            == "250 2.0.0 Ok: queued as A; Ok: queued as B")
    assert str(accepted_reply(["queued as C"])) == "250 2.0.0 Ok: queued as C"
    assert str(accepted_reply([""])) == "250 2.0.0 Ok"
