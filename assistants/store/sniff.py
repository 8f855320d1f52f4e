"""What an uploaded file really is: safe file names, and content checked against the claimed type.

`clean_filename` keeps the last part of whatever path a client sends (`../../etc/passwd` is
`passwd`), drops control and bidirectional-override characters (`invoice\u202etxt.exe` cannot pose
as a text file) and bounds the length, keeping the extension. Stored bytes are always kept under
the file's id, never under its name; the name is only shown and offered on download.

`content_mismatch` compares the first bytes with what the type promises: images and PDFs by
their magic numbers, text types by being text (UTF-8, no NUL bytes, not an executable or an
archive in disguise). It returns the reason for a refusal, or None.
"""

from __future__ import annotations

import codecs
import unicodedata
from pathlib import PurePosixPath

MAX_NAME_BYTES = 255
"""Longest stored file name, in UTF-8 bytes (what most file systems allow)."""
DEFAULT_NAME = "upload"
SNIFF_BYTES = 8192
"""How much of a text file is checked for being text."""

MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
    # A Word document is a zip archive.
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (b"PK\x03\x04",),
}
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json", "text/html")
# Programs and archives also hold NUL bytes early on, which the text check catches; signatures
# that are plain letters ("MZ", "GIF8") are left out so text that starts with them passes.
BINARY_SIGNATURES: dict[bytes, str] = {
    b"\x7fELF": "a Linux program",
    b"PK\x03\x04": "a zip archive",
    b"%PDF-": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
}
LABELS = {
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "image/gif": "a GIF image",
    "image/webp": "a WebP image",
    "application/pdf": "a PDF document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "a Word document",
}


def clean_filename(name: str | None) -> str:
    """A file name safe to store and show: the last path part, printable, at most 255 bytes."""
    raw = (name or "").replace("\\", "/")
    base = PurePosixPath(raw).name if raw.strip("/") else ""
    kept = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp"))
    kept = unicodedata.normalize("NFC", kept).strip()
    if kept in ("", ".", ".."):
        return DEFAULT_NAME
    if len(kept.encode()) <= MAX_NAME_BYTES:
        return kept
    suffix = PurePosixPath(kept).suffix
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    stem = kept[: len(kept) - len(suffix)] if suffix else kept
    while len((stem + suffix).encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def content_mismatch(mime: str, data: bytes) -> str | None:
    """Why `data` is not a `mime` file, or None when its first bytes fit the type."""
    label = LABELS.get(mime)
    if mime in MAGIC or mime == "image/webp":
        fits = data.startswith(MAGIC[mime]) if mime in MAGIC else data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        what = _signature(data)
        return None if fits else f"the content is not {label}" + (f" (it is {what})" if what else "")
    if mime in TEXT_TYPES:
        head = data[:SNIFF_BYTES]
        what = _signature(head)
        if what is not None:
            return f"the content is not text: it is {what}"
        if b"\x00" in head:
            return "the content is not text (it holds binary data)"
        try:
            # Decoded as a stream, so a character cut at the end of the sample is not an error.
            codecs.getincrementaldecoder("utf-8")().decode(head, final=len(data) <= SNIFF_BYTES)
        except UnicodeDecodeError:
            return "the content is not UTF-8 text"
    return None


def _signature(data: bytes) -> str | None:
    """What the bytes' known signature says they are ("a zip archive"), or None."""
    return next((what for signature, what in BINARY_SIGNATURES.items() if data.startswith(signature)), None)


IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The raster image types: the ones the chat shows inline and sends to models as images."""


def image_type(data: bytes) -> str | None:
    """The image type the bytes are, by their magic number, or None."""
    return next((mime for mime in IMAGE_TYPES if content_mismatch(mime, data) is None), None)
