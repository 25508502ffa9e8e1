"""Autoresponder attachment handling: content type detection, size cap, file names."""

import base64

import pytest

from mailpolicy.admin.attachments import decode_attachment, detect_type
from mailpolicy.admin.schema import ApiError, AttachmentIn


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("report.pdf", b"%PDF-1.7\n...", "application/pdf"),
    ("photo.bin", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
    ("photo.png", b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),  # content wins over name
    ("anim.gif", b"GIF89a\x01\x00", "image/gif"),
    ("letter.docx", b"PK\x03\x04rest",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("fake.docx", b"not a zip at all \x00\x01", "application/octet-stream"),
    ("archive.dat", b"PK\x03\x04rest", "application/zip"),
    ("notes.txt", "Grüße\n".encode(), "text/plain"),
    ("page.html", b"<html></html>", "text/html"),
    ("noext", b"plain words", "text/plain"),
    ("evil.txt", b"%PDF-1.4 pretending", "application/pdf"),
    ("data.bin", b"\x00\x01\x02\x03", "application/octet-stream"),
    ("archive.tar.gz", b"\x1f\x8b\x08\x00", "application/gzip"),
    ("invite.ics", b"BEGIN:VCALENDAR\r\n", "text/calendar"),
    ("img.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
])
def test_content_type_is_detected_from_the_bytes(name: str, data: bytes, expected: str) -> None:
    assert detect_type(name, data) == expected


def test_size_cap_names_the_attachment_field() -> None:
    att = AttachmentIn(filename="a.bin", data=base64.b64encode(b"x" * 101).decode())
    with pytest.raises(ApiError) as e:
        decode_attachment(att, 100)
    assert (e.value.status, e.value.field) == (413, "attachment")
    ok = decode_attachment(AttachmentIn(filename="a.txt", data=base64.b64encode(
        b"x" * 100).decode()), 100)
    assert ok.data == b"x" * 100 and ok.content_type == "text/plain"


@pytest.mark.parametrize("name", ["../x.txt", "a/b.txt", "a\\b.txt", "..", ".", ".hidden", ""])
def test_file_name_must_be_plain(name: str) -> None:
    with pytest.raises(ApiError) as e:
        decode_attachment(AttachmentIn(filename=name, data="aGk="), 100)
    assert e.value.field == "attachment"


def test_bad_base64_is_refused() -> None:
    with pytest.raises(ApiError) as e:
        decode_attachment(AttachmentIn(filename="a.txt", data="@@@"), 100)
    assert (e.value.status, e.value.field) == (422, "attachment")
