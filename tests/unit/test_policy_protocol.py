"""Policy wire format: incremental parsing in any chunking, limits, malformed input, replies."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from chunking import assert_chunking_is_irrelevant
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpolicy.policy import protocol
from mailpolicy.policy.protocol import FIELDS, Parser, Request, encode_action, encode_request

RCPT = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        b"client_address=192.0.2.1\nclient_name=mx.example.net\nhelo_name=mx.example.net\n"
        b"queue_id=8045F2AB23\nsender=a@example.net\nrecipient=b@example.com\n"
        b"recipient_count=0\ninstance=123.456.7\nsize=12345\nccert_subject=CN=x+3Dy\n"
        b"future_attribute=whatever=1\n\n")
WHOLE = Request("RCPT", "b@example.com", "a@example.net", "8045F2AB23", "123.456.7",
                "mx.example.net[192.0.2.1]", "12345", "", "0")


def feed_chunks(data: bytes, sizes: list[int] | None = None) -> tuple[list[Request], Parser]:
    parser = Parser()
    out: list[Request] = []
    pos = 0
    for n in sizes or []:
        out += parser.feed(data[pos:pos + n])
        pos += n
    out += parser.feed(data[pos:])
    return out, parser


def test_whole_request():
    (req,), parser = feed_chunks(RCPT)
    assert parser.error is None and parser.idle
    assert req == WHOLE and req.size == 12345


def test_values_may_contain_equals_signs_and_unknown_attributes_are_ignored():
    data = RCPT.replace(b"b@example.com", b"SRS0=HHH=TT=example.org=b@example.com")
    (req,), parser = feed_chunks(data)  # (ccert_subject and future_attribute hold "=" too)
    assert parser.error is None and req.recipient == "SRS0=HHH=TT=example.org=b@example.com"


def test_one_byte_at_a_time_gives_the_same_requests():
    data = RCPT * 3
    parser = Parser()
    out: list[Request] = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1])
    whole, _ = feed_chunks(data)
    assert out == whole and len(out) == 3 and parser.error is None and parser.idle


def test_partial_request_is_held_back():
    parser = Parser()
    assert parser.feed(RCPT[:-1]) == []
    assert not parser.idle
    assert len(parser.feed(b"\n")) == 1


def test_crlf_lines_are_tolerated():
    (req,), parser = feed_chunks(RCPT.replace(b"\n", b"\r\n"))
    assert parser.error is None and req.recipient == "b@example.com"


def test_duplicate_attribute_last_wins():
    (req,), _ = feed_chunks(b"request=smtpd_access_policy\nrecipient=x@a.example\n"
                            b"recipient=y@a.example\n\n")
    assert req.recipient == "y@a.example"


def test_empty_and_absent_values():
    (req,), _ = feed_chunks(b"request=smtpd_access_policy\nsize=\nsender=\n\n")
    assert req.size == 0 and req.sender == "" and req.recipient == "" and req.client == ""


def test_non_utf8_values_survive():
    (req,), _ = feed_chunks(b"request=smtpd_access_policy\nsender=\xff\xfe\n\n")
    assert req.sender.encode("utf-8", "surrogateescape") == b"\xff\xfe"


def test_line_without_equals_is_malformed():
    out, parser = feed_chunks(b"request=smtpd_access_policy\ngarbage\n\n")
    assert out == [] and parser.error is not None


def test_empty_name_is_malformed():
    out, parser = feed_chunks(b"request=smtpd_access_policy\n=value\n\n")
    assert out == [] and parser.error is not None


def test_nul_is_malformed():
    out, parser = feed_chunks(b"request=smtpd_access_policy\nsender=a\0b\n\n")
    assert out == [] and parser.error is not None


def test_missing_request_type_is_malformed():
    out, parser = feed_chunks(b"protocol_state=RCPT\nrecipient=b@example.com\n\n")
    assert out == [] and parser.error is not None
    out, parser = feed_chunks(b"request=junk\n\n")
    assert out == [] and parser.error is not None


def test_lone_empty_line_is_malformed():
    out, parser = feed_chunks(b"\n")
    assert out == [] and parser.error is not None


def test_requests_before_a_malformed_one_are_kept_nothing_after():
    out, parser = feed_chunks(RCPT + b"bad line\n\n" + RCPT)
    assert len(out) == 1 and parser.error is not None
    assert parser.feed(RCPT) == []  # dead after an error


def test_request_size_is_bounded_even_without_newlines():
    parser = Parser(max_request=1000)
    assert parser.feed(b"request=smtpd_access_policy\nsender=" + b"a" * 900) == []
    assert parser.error is None
    assert parser.feed(b"a" * 200) == []
    assert parser.error is not None and "longer" in str(parser.error)


def test_request_size_is_bounded_across_lines():
    parser = Parser(max_request=1000)
    lines = b"".join(b"x%d=%s\n" % (i, b"v" * 40) for i in range(30))
    assert parser.feed(b"request=smtpd_access_policy\n" + lines + b"\n") == []
    assert parser.error is not None


def test_request_at_the_limit_is_accepted():
    body = b"request=smtpd_access_policy\nsender="
    data = body + b"a" * (200 - len(body) - 2) + b"\n\n"
    assert len(data) == 200
    out, _ = (Parser(max_request=200).feed(data), None)
    assert len(out) == 1


def test_one_read_is_parsed_as_byte_by_byte():
    """A read that ends a request takes a shortcut; whatever it holds, the result is that of
    the general path."""
    for data in (RCPT, RCPT * 2, b"\n" + RCPT, RCPT + b"\n", RCPT[:-1] + b"=x\n\n",
                 b"=x\n" + RCPT, RCPT[:-1] + b"junk\n\n", RCPT.replace(b"\n", b"\r\n"),
                 RCPT[:-1] + b"a\rb=c\n\n", RCPT[:-1] + b"x=\0\n\n", RCPT[:-1] + b"x=\xff\n\n",
                 RCPT.replace(b"smtpd_access_policy", b"other")):
        assert_chunking_is_irrelevant(Parser, data, [1] * len(data))


def test_encode_action():
    assert encode_action("DUNNO") == b"action=DUNNO\n\n"
    assert encode_action("550 5.1.1 <a@b>: no\nsuch") == b"action=550 5.1.1 <a@b>: no such\n\n"
    assert encode_action("") == b"action=DUNNO\n\n"


def test_encode_request_round_trip():
    attrs = {"request": "smtpd_access_policy", "recipient": "a=b@c.example", "x": "",
             "sender": "s@d.example", "size": "7"}
    (req,) = Parser().feed(encode_request(attrs))
    assert (req.recipient, req.sender, req.size) == ("a=b@c.example", "s@d.example", 7)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([RCPT, b"request=smtpd_access_policy\n\n", b"x=y\n", b"\n",
                                 b"junk", b"=\n", b"\r\n", b"\0", b"a=b=c\n"]), max_size=12),
       st.lists(st.integers(min_value=0, max_value=50), max_size=20))
def test_any_chunking_gives_the_same_result(pieces, sizes):
    assert_chunking_is_irrelevant(lambda: Parser(max_request=4096), b"".join(pieces), sizes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data):
    parser = Parser(max_request=512)
    for req in parser.feed(data):
        assert isinstance(req, Request)


def test_the_compiled_scanner_is_used_when_it_was_built():
    # pyproject builds it when it can (optional: an install without a C compiler works, as
    # the README promises); whichever mailpolicy is imported (checkout or `pip install .`)
    # uses it exactly when its own copy has it
    built = importlib.util.find_spec("mailpolicy.policy._fields") is not None
    assert (protocol.fields is not protocol.fields_py) == built


def test_without_the_compiled_scanner_the_python_twin_serves():
    """README: without gcc/python3-dev the package installs all the same and uses the
    scanner's Python twin. A fresh interpreter in which the extension cannot be imported
    parses a request the same way."""
    code = (
        "import sys; sys.modules['mailpolicy.policy._fields'] = None\n"  # ImportError
        "from mailpolicy.policy import protocol\n"
        "assert protocol.fields is protocol.fields_py\n"
        "[r] = protocol.Parser().feed(sys.stdin.buffer.read())\n"
        "print(r.recipient, r.sender, r.queue_id)\n")
    pkg = str(Path(protocol.__file__).resolve().parents[2])
    res = subprocess.run([sys.executable, "-c", code], input=RCPT, capture_output=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": pkg})
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().split() == ["b@example.com", "a@example.net", "8045F2AB23"]


LINE_PARTS = [b"request=smtpd_access_policy", b"recipient=a@b.example", b"sender=", b"size=12",
              b"client_name=x", b"client_address=192.0.2.1", b"protocol_state=rcpt",
              b"queue_id=Q", b"instance=i", b"x=y=z", b"=v", b"novalue", b"", b"\r", b"\0",
              b"\xff\xfe", b"recipient", b"=", b"\xe2\x82", b"sender=\xc3\xa9"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.sampled_from(LINE_PARTS), max_size=3).map(b"".join), max_size=12)
       .map(b"\n".join))
def test_compiled_scanner_answers_as_the_python_one(block):
    assert protocol.fields(block) == protocol.fields_py(block)


def test_scanner_fields_in_order():
    values = protocol.fields_py(RCPT[:-2])
    assert values is not None and dict(zip(FIELDS, values, strict=True))["size"] == "12345"
    assert protocol.fields(RCPT[:-2]) == values
