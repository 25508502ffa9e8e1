"""Name and address rules (addresses.py)."""

import pytest

from mailpolicy.core.addresses import (
    AddressError,
    normalize_address,
    normalize_domain,
    parse_target,
    split_extension,
    validate_name,
)


@pytest.mark.parametrize("name", ["info", "a", "john.smith", "sales-2", "0", "a.b-c.d"])
def test_valid_mailbox_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Info", ".info", "info.", "a..b", "a_b", "a+b", "../x",
                                  "a/b", "a\x00b", "ü", "a b", "x" * 65, "a@b"])
def test_invalid_mailbox_names(name):
    with pytest.raises(AddressError):
        validate_name(name)


def test_domain_is_case_folded_and_idna_encoded():
    assert normalize_domain("Example.TEST.") == "example.test"
    assert normalize_domain("exämple.test") == "xn--exmple-cua.test"
    assert normalize_domain("EXÄMPLE.test") == "xn--exmple-cua.test"


@pytest.mark.parametrize("name", ["", "localhost", "a..b", "../etc", "a/b.test", "-a.test",
                                  "a-.test", "a b.test", "x" * 64 + ".test", "a.123", "a@b.test"])
def test_invalid_domains(name):
    with pytest.raises(AddressError):
        normalize_domain(name)


def test_extension_split_keeps_leading_delimiter():
    assert split_extension("user+tag") == ("user", "tag")
    assert split_extension("user+a+b") == ("user", "a+b")
    assert split_extension("user") == ("user", None)
    assert split_extension("+user") == ("+user", None)


def test_normalize_address_folds_domain_only():
    assert normalize_address("<John@Exämple.TEST>") == "John@xn--exmple-cua.test"


def test_parse_target_accepts_local_names_of_the_domain():
    assert parse_target("bob", "example.test") == "bob@example.test"
    assert parse_target("x@Other.Test", "example.test") == "x@other.test"
    with pytest.raises(AddressError):
        parse_target("Bad Name", "example.test")
    with pytest.raises(AddressError):
        parse_target("bob")
