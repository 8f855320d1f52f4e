"""Turn an uploaded file into plain text for file search.

The type is decided by the file name's extension first and the MIME type second, because
browsers and SDKs often send `application/octet-stream` for everything. Each reader returns text
with `\\n` line ends; anything wrong with the file becomes an `IngestionError` whose `code` is
the vector store file's `last_error.code`, and no other exception escapes for bad input.

Text without a byte order mark is read as UTF-8. If it is not UTF-8 and does not look binary,
it is read as Windows-1252, the usual encoding of legacy text and spreadsheet exports; that
fallback can garble a few characters of other 8-bit encodings but never fails. Text with a UTF-8,
UTF-16 or UTF-32 byte order mark is decoded strictly by it. UTF-16 without a mark is rejected as
binary, since its zero bytes cannot be told apart from binary data.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import zipfile
from html.parser import HTMLParser
from typing import Final

import docx
import pypdf
from docx.table import Table

from assistants.exceptions import InvalidFileError, UnsupportedFileError

DEFAULT_MAX_BYTES: Final = 50 * 1024 * 1024
"""The largest file `extract_text` reads unless told otherwise."""
DOCX_UNPACK_FACTOR: Final = 4
"""A DOCX may unpack to at most this many times `max_bytes`; more is treated as a zip bomb."""

_TEXT_EXTENSIONS: Final = frozenset(
    {".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".log", ".xml", ".yaml", ".yml"}
    | {".toml", ".ini", ".cfg"}
)
_CODE_EXTENSIONS: Final = frozenset(
    {".py", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".swift"}
    | {".c", ".h", ".cpp", ".cc", ".cxx", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".pl"}
    | {".lua", ".r", ".sh", ".bash", ".zsh", ".ps1", ".css", ".scss", ".sql", ".vue", ".svelte"}
)
_EXTENSION_KINDS: Final[dict[str, str]] = {
    **dict.fromkeys(_TEXT_EXTENSIONS | _CODE_EXTENSIONS, "text"),
    ".html": "html",
    ".htm": "html",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".pdf": "pdf",
    ".docx": "docx",
}
_MIME_KINDS: Final[dict[str, str]] = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/json": "json",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/javascript": "text",
    "application/x-sh": "text",
    "application/xml": "text",
    "application/x-yaml": "text",
}

SUPPORTED_EXTENSIONS: Final = frozenset(_EXTENSION_KINDS)
"""File name extensions `extract_text` reads (lower case, with the dot)."""

# A sample this long is enough to tell text from binary without scanning a whole large file.
_SNIFF_BYTES: Final = 8192
# Bytes below 0x20 that ordinary text contains: tab, line feed, form feed, carriage return, escape.
_TEXT_CONTROLS: Final = frozenset(b"\t\n\x0c\r\x1b")
_BOMS: Final = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def extract_text(
    filename: str,
    content: bytes,
    mime: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> str:
    """The plain text of an uploaded file, ready to be chunked.

    Reads text, Markdown and source code as they are; HTML as its visible text with blocks on
    their own lines; CSV as `column: value` lines per row; JSON pretty-printed; PDF page by page
    with a blank line between pages; DOCX paragraphs and table rows in document order.

    Raises `UnsupportedFileError` for a type it does not read and `InvalidFileError` for a file
    that is larger than `max_bytes`, empty, corrupt, encrypted, binary where text was expected,
    or without any text.
    """
    kind = _kind(filename, mime)
    if len(content) > max_bytes:
        raise InvalidFileError(
            f"{filename} is {_size(len(content))}, over the {_size(max_bytes)} limit "
            "for file search. Split it into smaller files and upload those."
        )
    if not content:
        raise InvalidFileError(f"{filename} is empty: there is no text to search.")
    if kind == "pdf":
        text = _pdf_text(filename, content)
    elif kind == "docx":
        text = _docx_text(filename, content, max_unpacked=max_bytes * DOCX_UNPACK_FACTOR)
    else:
        decoded = _decode(filename, content)
        if kind == "html":
            text = _html_text(decoded)
        elif kind in ("csv", "tsv"):
            text = _table_text(filename, decoded, delimiter="\t" if kind == "tsv" else ",")
        elif kind == "json":
            text = _json_text(filename, decoded)
        else:
            text = decoded
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise InvalidFileError(
            f"{filename} has no text to search. If it is a scanned document, run it through "
            "OCR first and upload the result."
        )
    return text


def _kind(filename: str, mime: str | None) -> str:
    extension = posixpath.splitext(filename.lower())[1]
    if extension in _EXTENSION_KINDS:
        return _EXTENSION_KINDS[extension]
    media_type = (mime or "").split(";", 1)[0].strip().lower()
    if media_type in _MIME_KINDS:
        return _MIME_KINDS[media_type]
    if media_type.startswith("text/"):
        return "text"
    described = f"{extension} files" if extension else f"files of type {media_type or 'unknown'}"
    raise UnsupportedFileError(
        f"File search cannot read {described} ({filename}). Upload text, Markdown, HTML, CSV, "
        "JSON, source code, PDF or Word (.docx) files."
    )


def _size(size: int) -> str:
    """A size as people read it: bytes below a kilobyte, then KB, then MB (so a small limit is not "0.0 MB")."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _decode(filename: str, content: bytes) -> str:
    for bom, encoding in _BOMS:
        if content.startswith(bom):
            try:
                return content.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InvalidFileError(
                    f"{filename} starts with a {encoding.upper()} byte order mark but is not "
                    f"valid {encoding.upper()} text. Save it again as UTF-8 and re-upload it."
                ) from exc
    if _looks_binary(content):
        raise InvalidFileError(
            f"{filename} contains binary data, not text. Check that the file is what its name "
            "says, or save it again as UTF-8 text."
        )
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("cp1252", errors="replace")


def _looks_binary(content: bytes) -> bool:
    sample = content[:_SNIFF_BYTES]
    if b"\x00" in sample:
        return True
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in _TEXT_CONTROLS)
    # Real text has almost no other control bytes; random or compressed data has about one in
    # nine, so a threshold of one in twenty separates them with room on both sides.
    return controls * 20 > len(sample)


# Elements whose content a reader never sees. <head> is not among them because its <title>
# names the page, which makes it worth searching; its other content holds no text.
_HIDDEN_TAGS: Final = frozenset({"script", "style", "noscript", "template"})
# Elements that start a new line, and those that also leave a blank line around them.
_LINE_TAGS: Final = frozenset(
    {"br", "div", "li", "tr", "dt", "dd", "section", "article", "header", "footer", "nav", "main"}
    | {"aside", "form", "figure", "figcaption", "hr", "address", "details", "summary", "title"}
)
_PARAGRAPH_TAGS: Final = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre", "blockquote", "ul", "ol", "dl"}
)
_CELL_TAGS: Final = frozenset({"td", "th"})
_SPACES: Final = re.compile(r"\s+")
_BLANK_LINES: Final = re.compile(r"\n{3,}")


class _VisibleText(HTMLParser):
    """Collects the text a browser would show, one block element per line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._line_start = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _CELL_TAGS and not self._line_start:
            self._emit(" | ")
        self._break(tag)
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        self._break(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if not self._pre:
            data = _SPACES.sub(" ", data)
            if self._line_start:
                data = data.lstrip()
        self._emit(data)

    def _emit(self, data: str) -> None:
        if data:
            self.parts.append(data)
            self._line_start = data.endswith("\n")

    def _break(self, tag: str) -> None:
        if tag in _PARAGRAPH_TAGS:
            self.parts.append("\n\n")
            self._line_start = True
        elif tag == "br" or (tag in _LINE_TAGS and not self._line_start):
            # Only <br> may add an empty line; nested blocks such as <tr><td><div> start one.
            self.parts.append("\n")
            self._line_start = True


def _html_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = (line.rstrip() for line in "".join(parser.parts).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _table_text(filename: str, text: str, *, delimiter: str) -> str:
    # Each row becomes `header: value` lines so a chunk cut from the middle of a long table
    # still says what every value means.
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(row)]
    except csv.Error as exc:
        raise InvalidFileError(
            f"{filename} is not a readable CSV file ({exc}). Check its quoting and re-upload it."
        ) from exc
    if len(rows) < 2:
        return "\n".join(", ".join(row) for row in rows)
    header = [name.strip() for name in rows[0]]
    records = []
    for row in rows[1:]:
        lines = []
        for position, value in enumerate(row):
            if not value.strip():
                continue
            name = header[position] if position < len(header) and header[position] else None
            lines.append(f"{name or f'column {position + 1}'}: {value.strip()}")
        records.append("\n".join(lines))
    return "\n\n".join(records)


def _json_text(filename: str, text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        # `JSONDecodeError` is a `ValueError`; so is an integer too long to convert, and very
        # deep nesting ends in `RecursionError`.
        raise InvalidFileError(
            f"{filename} is not valid JSON ({exc}). Fix the file, or upload it as .txt to "
            "search it as plain text."
        ) from exc


def _pdf_text(filename: str, content: bytes) -> str:
    # pypdf raises many exception types on damaged files (its own, but also ValueError,
    # KeyError, TypeError, zlib errors), so this boundary translates all of them.
    try:
        reader = pypdf.PdfReader(io.BytesIO(content))
        # Many PDFs are encrypted only to restrict printing or copying and open with an empty
        # password; those are readable, the rest need the owner to remove the password.
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidFileError(
                f"{filename} is protected by a password. Remove the password and upload it again."
            )
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except InvalidFileError:
        raise
    except Exception as exc:
        raise InvalidFileError(
            f"{filename} is not a readable PDF ({type(exc).__name__}: {exc}). Export it again "
            "from the program that made it and re-upload it."
        ) from exc
    return "\n\n".join(page for page in pages if page)


def _docx_text(filename: str, content: bytes, *, max_unpacked: int) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise InvalidFileError(
            f"{filename} is not a Word document: a .docx file is a zip archive and this one "
            "is not. If it is an old .doc file, save it as .docx and upload it again."
        ) from exc
    # The sizes in the zip directory are also the most `zipfile` will inflate each member to,
    # so checking them before python-docx reads anything bounds the memory a bomb can take.
    if unpacked > max_unpacked:
        raise InvalidFileError(
            f"{filename} unpacks to {_size(unpacked)}, over the {_size(max_unpacked)} "
            "file search accepts for a Word document. Split it into smaller documents."
        )
    try:
        document = docx.Document(io.BytesIO(content))
        blocks = [
            _docx_table_text(block) if isinstance(block, Table) else block.text
            for block in document.iter_inner_content()
        ]
    except Exception as exc:
        # python-docx and lxml raise their own errors, KeyError and ValueError on a zip that
        # is not a valid Word document; all of them mean the same thing to the uploader.
        raise InvalidFileError(
            f"{filename} is not a readable Word document ({type(exc).__name__}: {exc}). Open "
            "it in Word or LibreOffice, save it as .docx and upload it again."
        ) from exc
    return "\n\n".join(block for block in blocks if block.strip())


def _docx_table_text(table: Table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # A merged cell is returned once for every grid column it spans; keep it once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(cell.text.strip())
        rows.append(" | ".join(cells))
    return "\n".join(rows)
