"""Admin API request decoding: typed, bounded bodies whose errors name the field."""

import pytest

from mailpolicy.admin.schema import (
    UNSET,
    ApiError,
    AutoresponderFields,
    DomainCreate,
    MailboxFields,
    changes,
    decode,
)


@pytest.mark.parametrize(("body", "type_", "field"), [
    (b'{"owner": "x"}', DomainCreate, "name"),  # missing required
    (b'{"name": "a.example", "colour": 1}', DomainCreate, "colour"),  # unknown
    (b'{"name": "a.example", "dmarc": "yes"}', DomainCreate, "dmarc"),  # wrong type
    (b'{"name": "a\\u0000.example"}', DomainCreate, "name"),  # NUL
    (b'{"name": "a.example", "owner": "a\\nb"}', DomainCreate, "owner"),  # line break
    (b'{"aliases": ["ok", "x\\u0000"]}', MailboxFields, "aliases"),  # NUL inside a list
    (b'{"aliases": "one two"}', MailboxFields, "aliases"),  # a list, not a string
    (b'{"max_size": -1}', MailboxFields, "max_size"),
    (b'{"attachment": {"filename": "a"}}', AutoresponderFields, "attachment"),
    (b'{"attachment": {"filename": "a", "data": "", "x": 1}}', AutoresponderFields,
     "attachment"),
    (b'{"interval_days": 0}', AutoresponderFields, "interval_days"),
    (b'{"start": "31.12.2026"}', AutoresponderFields, "start"),
    (b'{"subject": "' + b"s" * 999 + b'"}', AutoresponderFields, "subject"),
])
def test_errors_name_the_field(body: bytes, type_: type, field: str) -> None:
    with pytest.raises(ApiError) as e:
        decode(body, type_)
    assert (e.value.status, e.value.field) == (422, field)


def test_immutable_keys_are_refused_by_name() -> None:
    with pytest.raises(ApiError) as e:
        decode(b'{"name": "other", "enabled": true}', MailboxFields,
               immutable=("name", "domain"))
    assert e.value.field == "name" and "cannot be changed" in e.value.message


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"\xff"])
def test_not_a_json_object(body: bytes) -> None:
    with pytest.raises(ApiError) as e:
        decode(body, MailboxFields)
    assert (e.value.status, e.value.code) == (400, "bad_json")


def test_only_given_fields_are_changes() -> None:
    f = decode(b'{"enabled": false, "max_size": null}', MailboxFields)
    assert changes(f) == {"enabled": False, "max_size": None}
    assert f.password is UNSET
    ar = decode(b'{"from": "A <a@b.example>", "message": "line 1\\nline 2\\ttab"}',
                AutoresponderFields)
    assert changes(ar) == {"from_": "A <a@b.example>", "message": "line 1\nline 2\ttab"}
