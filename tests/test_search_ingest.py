"""File search ingestion: real files of every supported kind become text, bad files fail with the
vector store file error code a user would see, and text is chunked the way the hosted `static`
strategy describes."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import time
import zipfile

import docx
import pypdf
import pytest
from fpdf import FPDF

from assistants.exceptions import IngestionError, InvalidFileError, UnsupportedFileError
from assistants.search import Chunk, chunk_text, extract_text, validate_static_strategy
from assistants.tokens import count_text, token_ends

# --- file factories ---------------------------------------------------------------------------


def make_pdf(*pages: str) -> bytes:
    """A PDF with one page per argument, each holding that text; no argument means one blank page."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages or ("",):
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypt_pdf(content: bytes, *, user_password: str, algorithm: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(content)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in the northern region.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).text = "Revenue"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "1200"
    document.add_paragraph("Costs stayed flat after the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def error_of(
    filename: str, content: bytes, mime: str | None = None, **kwargs: int
) -> IngestionError:
    with pytest.raises(IngestionError) as caught:
        extract_text(filename, content, mime, **kwargs)
    error = caught.value
    # Every message is a sentence for a person: it names the file and ends with a full stop.
    assert error.message.endswith("."), error.message
    assert error.to_last_error() == {"code": error.code, "message": error.message}
    return error


# --- readable files ---------------------------------------------------------------------------


def test_pdf_text_of_every_page_with_a_blank_line_between_pages() -> None:
    content = make_pdf("The first page talks about apples.", "The second page talks about pears.")
    text = extract_text("fruit.pdf", content)
    assert text == "The first page talks about apples.\n\nThe second page talks about pears."


def test_pdf_encrypted_only_against_copying_opens_without_a_password() -> None:
    plain = make_pdf("Owner restrictions do not hide this sentence.")
    content = encrypt_pdf(plain, user_password="", algorithm="AES-128")
    assert pypdf.PdfReader(io.BytesIO(content)).is_encrypted
    assert extract_text("locked.pdf", content) == "Owner restrictions do not hide this sentence."


def test_docx_paragraphs_and_table_cells_in_document_order() -> None:
    text = extract_text("report.docx", make_docx())
    assert text == (
        "Quarterly report\n\nRevenue grew in the northern region.\n\n"
        "Region | Revenue\nNorth | 1200\n\nCosts stayed flat after the table."
    )


def test_html_keeps_visible_text_and_drops_script_and_style() -> None:
    html = b"""<!doctype html><html><head><title>Guide</title>
    <style>body { color: red; }</style><script>var secret = "hidden";</script></head>
    <body><h1>Install</h1><p>Run the   installer
    and wait &amp; see.</p><noscript>Enable JavaScript</noscript>
    <ul><li>First step</li><li>Second step</li></ul>
    <table><tr><th>Key</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr></table>
    <p>Line one<br>Line two</p></body></html>"""
    text = extract_text("guide.html", html)
    assert text == (
        "Guide\n\nInstall\n\nRun the installer and wait & see.\n\nFirst step\nSecond step\n\n"
        "Key | Value\na | 1\n\nLine one\nLine two"
    )


def test_csv_rows_become_labelled_lines() -> None:
    content = b"name,city,age\nAda,London,36\nAlan,,41\n"
    text = extract_text("people.csv", content)
    assert text == "name: Ada\ncity: London\nage: 36\n\nname: Alan\nage: 41"


def test_json_is_pretty_printed() -> None:
    content = json.dumps({"name": "Zoë", "tags": ["a", "b"]}).encode()
    text = extract_text("data.json", content)
    assert text == '{\n  "name": "Zoë",\n  "tags": [\n    "a",\n    "b"\n  ]\n}'


def test_markdown_and_source_code_are_read_as_they_are() -> None:
    markdown = "# Title\n\nSome *emphasis* and `code`.\n"
    assert extract_text("notes.md", markdown.encode()) == markdown
    source = 'def greet(name):\n    return f"hello {name}"\r\n'
    assert extract_text("greet.py", source.encode()) == source.replace("\r\n", "\n")


def test_text_with_utf8_bom_utf16_and_legacy_encodings() -> None:
    assert extract_text("bom.txt", "\ufeffcafé ☕".encode()) == "café ☕"
    assert extract_text("wide.txt", "naïve ☃ text".encode("utf-16")) == "naïve ☃ text"
    assert extract_text("big.txt", "\ufeffbig end".encode("utf-16-be")) == "big end"
    # Windows-1252 is the fallback for text that is not UTF-8.
    assert extract_text("legacy.txt", "façade – 5€".encode("cp1252")) == "façade – 5€"


def test_type_comes_from_extension_first_then_mime() -> None:
    # An extension wins over a generic or wrong MIME type.
    assert extract_text("page.html", b"<p>hi</p><script>x</script>", "text/plain") == "hi"
    # Without a known extension the MIME type decides.
    assert extract_text("upload", b'{"a":1}', "application/json; charset=utf-8") == '{\n  "a": 1\n}'
    assert extract_text("blob", make_pdf("From mime."), "application/pdf") == "From mime."
    assert extract_text("README", b"plain words", "text/x-readme") == "plain words"


# --- files that must fail -----------------------------------------------------------------------


def test_unsupported_types_fail_with_unsupported_file() -> None:
    for filename, mime in [("setup.exe", None), ("old.doc", "application/msword"), ("x", None)]:
        error = error_of(filename, b"MZ\x90\x00 not for us", mime)
        assert isinstance(error, UnsupportedFileError)
        assert error.code == "unsupported_file"
        assert "cannot read" in error.message
        assert "PDF" in error.message  # It tells the user what would work.


@pytest.mark.parametrize(
    ("filename", "content", "says"),
    [
        (
            "broken.pdf",
            b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer garbage",
            "not a readable PDF",
        ),
        ("truncated.pdf", make_pdf("Some text")[:300], "not a readable PDF"),
        ("fake.docx", b"This is plain text pretending to be Word.", "not a Word document"),
        ("bad.json", b'{"name": "unterminated', "not valid JSON"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        ("empty.txt", b"", "empty"),
        ("spaces.md", b" \n\t \n", "no text"),
        ("blank.pdf", make_pdf(), "no text"),
        ("wide-no-bom.txt", "no mark".encode("utf-16-le"), "binary data"),
        ("lying.txt", b"\xff\xfe\x00\xd8", "not valid UTF-16"),
        ("quoted.csv", b'a,b\n"x' + b"y" * 200_000 + b'"\n', "not a readable CSV"),
    ],
)
def test_unreadable_files_fail_with_invalid_file(filename: str, content: bytes, says: str) -> None:
    error = error_of(filename, content)
    assert isinstance(error, InvalidFileError)
    assert error.code == "invalid_file"
    assert says in error.message
    assert filename in error.message


def test_password_protected_pdf_asks_for_the_password_to_be_removed() -> None:
    content = encrypt_pdf(make_pdf("Secret plans."), user_password="hunter2", algorithm="RC4-128")
    error = error_of("secret.pdf", content)
    assert error.code == "invalid_file"
    assert "protected by a password" in error.message


def test_scanned_pdf_without_text_layer_suggests_ocr() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")  # A drawing, as a scanned page would be an image.
    error = error_of("scan.pdf", bytes(pdf.output()))
    assert error.code == "invalid_file"
    assert "no text" in error.message and "OCR" in error.message


def test_binary_garbage_in_a_text_file_is_rejected() -> None:
    garbage = random.Random(7).randbytes(4096)
    for filename in ("notes.txt", "data.csv", "page.html", "main.py"):
        error = error_of(filename, garbage)
        assert error.code == "invalid_file"
        assert "binary data" in error.message


def test_docx_that_unpacks_far_beyond_the_limit_is_refused() -> None:
    # A real document plus one member of zeros: 8 MB unpacked from a few kilobytes.
    out = io.BytesIO(make_docx())
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/padding.bin", b"\0" * 8_000_000)
    content = out.getvalue()
    assert len(content) < 100_000
    error = error_of("bomb.docx", content, max_bytes=1_000_000)
    assert error.code == "invalid_file"
    # The limit is four times max_bytes; the document's own parts add to the padding.
    assert re.search(r"unpacks to 8\.\d MB, over the 3\.8 MB", error.message), error.message
    # The same file is fine once the limit allows it.
    assert "Quarterly report" in extract_text("bomb.docx", content, max_bytes=10_000_000)


def test_zip_that_is_not_a_word_document() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "not a document")
    error = error_of("archive.docx", out.getvalue())
    assert error.code == "invalid_file"
    assert "not a readable Word document" in error.message


def test_files_over_the_size_limit_name_the_limit() -> None:
    error = error_of("huge.txt", b"a" * 2_000_000, max_bytes=1024 * 1024)
    assert error.code == "invalid_file"
    assert "over the 1.0 MB limit" in error.message
    # A small limit is written in bytes or kilobytes, never as "0.0 MB".
    assert "small.txt is 600 bytes, over the 500 bytes limit" in error_of("small.txt", b"a" * 600, max_bytes=500).message
    assert "mid.txt is 3.0 KB, over the 2.0 KB limit" in error_of("mid.txt", b"a" * 3072, max_bytes=2048).message
    assert extract_text("fits.txt", b"a" * 1024, max_bytes=1024) == "a" * 1024


def test_random_bytes_never_raise_anything_but_ingestion_errors() -> None:
    rng = random.Random(42)
    seeds = [make_pdf("Seed text for mutation."), make_docx(), b'{"a": [1, 2]}', b"a,b\n1,2\n"]
    for name in ("x.pdf", "x.docx", "x.json", "x.csv", "x.html", "x.txt"):
        for seed in seeds:
            for _ in range(8):
                mutated = bytearray(seed)
                for _ in range(rng.randint(1, 40)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                # Reading may succeed or fail with an IngestionError; anything else escapes
                # and fails the test.
                with contextlib.suppress(IngestionError):
                    extract_text(name, bytes(mutated))


# --- chunking -------------------------------------------------------------------------------------


def prose(paragraphs: int, sentences: int = 6) -> str:
    rng = random.Random(paragraphs)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    return "\n\n".join(
        " ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize() + "."
            for _ in range(sentences)
        )
        for _ in range(paragraphs)
    )


def tokens_in(text: str) -> int:
    # `count_text` refuses special-token spellings such as <|endoftext|>; `token_ends` reads
    # them as the ordinary text they are in an uploaded file.
    return len(token_ends(text))


def assert_well_formed(text: str, chunks: list[Chunk], max_tokens: int) -> None:
    assert chunks, "a text with words must give chunks"
    for position, chunk in enumerate(chunks):
        assert chunk.index == position
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text and chunk.text == chunk.text.strip()
        assert 0 < chunk.tokens <= max_tokens
        # Re-tokenized on its own a chunk may differ from its window by a token at either edge.
        assert tokens_in(chunk.text) <= max_tokens + 2
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.start < after.start and before.end < after.end
    # Coverage: nothing but whitespace lies outside every chunk.
    assert not text[: chunks[0].start].strip() and not text[chunks[-1].end :].strip()
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start <= before.end or not text[before.end : after.start].strip()


@pytest.mark.parametrize(("max_tokens", "overlap"), [(800, 400), (100, 0), (300, 50), (4096, 2048)])
def test_chunks_cover_the_text_and_map_back_to_it(max_tokens: int, overlap: int) -> None:
    text = prose(400)
    chunks = chunk_text(text, max_tokens=max_tokens, overlap=overlap)
    assert_well_formed(text, chunks, max_tokens)
    assert len(chunks) > 3


def test_consecutive_chunks_overlap_by_about_the_requested_tokens() -> None:
    text = prose(200)
    chunks = chunk_text(text, max_tokens=400, overlap=100)
    for before, after in zip(chunks, chunks[1:], strict=False):
        shared = tokens_in(text[after.start : before.end])
        assert 90 <= shared <= 125, shared


def test_chunks_end_at_paragraph_breaks_when_one_is_near() -> None:
    text = prose(100, sentences=4)  # Paragraphs of about 60 tokens, well inside the slack.
    chunks = chunk_text(text, max_tokens=400, overlap=100)
    for chunk in chunks[:-1]:
        assert text[chunk.end : chunk.end + 2] == "\n\n", text[chunk.end - 20 : chunk.end + 5]


def test_chunks_end_at_sentences_then_words_and_never_start_inside_a_word() -> None:
    one_paragraph = prose(1, sentences=300)
    chunks = chunk_text(one_paragraph, max_tokens=200, overlap=60)
    assert all(chunk.text.endswith(".") for chunk in chunks)
    no_punctuation = re.sub(r"[.]", "", one_paragraph)
    chunks = chunk_text(no_punctuation, max_tokens=200, overlap=60)
    assert_well_formed(no_punctuation, chunks, 200)
    for chunk in chunks:
        assert chunk.start == 0 or no_punctuation[chunk.start - 1] == " "
        assert chunk.end == len(no_punctuation) or no_punctuation[chunk.end] == " "


def test_text_without_spaces_unicode_and_special_token_spellings() -> None:
    solid = "x" * 50_000
    assert_well_formed(solid, chunk_text(solid, max_tokens=100, overlap=10), 100)
    mixed = "Grüße aus Köln 😀 — 東京の天気は晴れです。 <|endoftext|> done.\n" * 400
    assert_well_formed(mixed, chunk_text(mixed, max_tokens=150, overlap=40), 150)
    lone_surrogate = "before \ud800 after " * 100
    assert_well_formed(lone_surrogate, chunk_text(lone_surrogate, max_tokens=100, overlap=0), 100)


def test_token_offsets_match_the_tokenizer_and_span_long_texts() -> None:
    sentence = "Tokens end where the next one starts; naïve café 😀.\n"
    ends = token_ends(sentence)
    assert len(ends) == count_text(sentence) and ends[-1] == len(sentence)
    # Past bpe-openai's million characters per call the text is encoded in segments.
    long_text = sentence * 40_000
    ends = token_ends(long_text)
    assert ends[-1] == len(long_text) and list(ends) == sorted(ends)
    assert abs(len(ends) - 40_000 * count_text(sentence)) < 200


def test_short_empty_and_whitespace_texts() -> None:
    [only] = chunk_text("  Just one line.  \n")
    assert (only.text, only.start, only.end, only.index) == ("Just one line.", 2, 16, 0)
    assert chunk_text("") == []
    assert chunk_text(" \n\n\t ") == []


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "says"),
    [
        (99, 0, "between 100 and 4096"),
        (4097, 0, "between 100 and 4096"),
        (800, -1, "must not be negative"),
        (800, 401, "half of max_chunk_size_tokens (400)"),
        (800.0, 400, "must be an integer"),
        (800, True, "must be an integer"),
    ],
)
def test_invalid_strategy_sizes_are_refused(max_tokens: int, overlap: int, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        chunk_text("some text", max_tokens=max_tokens, overlap=overlap)
    with pytest.raises(ValueError, match=re.escape(says)):
        validate_static_strategy(max_tokens, overlap)


def test_chunking_throughput_on_five_megabytes() -> None:
    text = prose(12_000)
    text = (text * (5_000_000 // len(text) + 1))[:5_000_000]
    chunk_text("warm the tokenizer tables")
    started = time.perf_counter()
    chunks = chunk_text(text)
    elapsed = time.perf_counter() - started
    print(f"\nchunked 5.0 MB into {len(chunks)} chunks in {elapsed:.3f} s: {5 / elapsed:.1f} MB/s")
    assert chunks[-1].end == len(text.rstrip())
