"""Autoresponder attachments: base64 decoding, size cap, content type detection."""

from __future__ import annotations

import base64
import binascii
import mimetypes

from mailpolicy.admin.schema import ApiError, AttachmentIn
from mailpolicy.core.model import Attachment

# magic numbers of common file types, checked in order; the content wins over the file name
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF-", 0, "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", 0, "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", 0, "application/vnd.rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "application/x-ole-storage"),
    (b"OggS", 0, "application/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"fLaC", 0, "audio/flac"),
    (b"BEGIN:VCALENDAR", 0, "text/calendar"),
    (b"BEGIN:VCARD", 0, "text/vcard"),
)
_MAGIC_TYPES = {ctype for _m, _o, ctype in _MAGIC} | {
    "application/zip", "image/webp", "audio/wav", "video/x-msvideo", "video/mp4"}
# ZIP containers: the name tells docx/xlsx/odt etc. apart; the magic tells that it is a ZIP
_ZIP = b"PK\x03\x04"
_ZIP_TYPES = {
    ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".odp", ".epub", ".jar", ".zip",
}
# OLE (old Office) files: the name tells which one
_OLE_TYPES = {".doc", ".xls", ".ppt", ".msg"}


def sniff(data: bytes) -> str | None:
    """The content type the first bytes show, or None."""
    for magic, offset, ctype in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return ctype
    if data.startswith(_ZIP):
        return "application/zip"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}[
            data[8:12]]
    return None


def _is_text(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return False
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > 65536 - 4  # cut in the middle of a character at the end
    return True


def detect_type(filename: str, data: bytes) -> str:
    """Content type from the content (magic numbers), refined by the name for containers,
    else from the name for text formats; application/octet-stream when unknown."""
    ext = ("." + filename.rsplit(".", 1)[-1].lower()) if "." in filename else ""
    guessed, _enc = mimetypes.guess_type(filename, strict=False)
    sniffed = sniff(data)
    if sniffed == "application/zip":
        return (guessed or sniffed) if ext in _ZIP_TYPES else sniffed
    if sniffed == "application/x-ole-storage":
        return (guessed or "application/octet-stream") if ext in _OLE_TYPES else (
            "application/octet-stream")
    if sniffed:
        return sniffed
    if _is_text(data):
        if guessed and (guessed.startswith("text/") or guessed in (
                "application/json", "application/xml", "image/svg+xml")):
            return guessed
        return "text/plain"
    # a name that claims a type we can recognise by content, but the content is not it
    if ext in _ZIP_TYPES or ext in _OLE_TYPES or guessed in _MAGIC_TYPES:
        return "application/octet-stream"
    if guessed and not guessed.startswith("text/"):
        return guessed
    return "application/octet-stream"


def decode_attachment(att: AttachmentIn, limit: int) -> Attachment:
    """Decode the base64 payload, enforce the size cap and detect the type."""
    if len(att.data) > (limit + 2) // 3 * 4 + 4:
        raise ApiError(413, "too_large", f"attachment is larger than {limit} bytes", "attachment")
    try:
        data = base64.b64decode(att.data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid", "attachment data is not valid base64",
                       "attachment") from None
    if len(data) > limit:
        raise ApiError(413, "too_large", f"attachment is larger than {limit} bytes", "attachment")
    name = att.filename
    if (not name or "/" in name or "\\" in name or name in (".", "..") or
            name.startswith(".")):
        raise ApiError(422, "invalid", "attachment needs a plain file name (no path)",
                       "attachment")
    return Attachment(filename=name, content_type=detect_type(name, data), data=data)
