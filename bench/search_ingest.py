"""File search ingestion, end to end: a plain-text file through a vector store until it is searchable.

In-process: a real `Runtime` on a temporary SQLite database (or ``--postgres URL``, a blank
database) with its background ingestion worker. The file is synthetic English-like text (the
`bench/search_query.py` corpus: Zipf-distributed words, 45% stop words) of ``--megabytes`` MB. The
clock runs from adding the file to the store until the store reports it `completed`, which covers
reading it, extracting the text, chunking it by tokens (800/400 by default, so every character is
indexed about twice) and inserting the chunks into the full-text index. Also timed on their own:
extraction + chunking, and the index insert of the same chunks. No embeddings. ``--text FILE``
uses real text instead (repeated up to the size), e.g. the English of Debian's licence files:
made-up words cost more tokens a byte than English does. Prints a Markdown table; asserts
nothing. Usage::

    .venv/bin/python bench/search_ingest.py
    .venv/bin/python bench/search_ingest.py --megabytes 5
    .venv/bin/python bench/search_ingest.py --postgres postgresql+asyncpg://user@host/db
    cat /usr/share/common-licenses/* $(find /usr/share/doc -name copyright) > /tmp/english.txt
    .venv/bin/python bench/search_ingest.py --text /tmp/english.txt
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from assistants.config import Settings  # noqa: E402
from assistants.runtime import Runtime  # noqa: E402
from assistants.search import ChunkRow, chunk_text, extract_text  # noqa: E402
from assistants.types.requests import VectorStoreCreate  # noqa: E402
from bench._common import machine, print_in_temp_folder  # noqa: E402
from bench.search_query import corpus  # noqa: E402

OWNER = "user_bench_ingest"


def document(megabytes: float, source: str | None = None) -> bytes:
    """About `megabytes` MB of text: `source`'s, repeated as needed, or synthetic paragraphs."""
    if source is not None:
        text = Path(source).read_text(encoding="utf-8", errors="replace")
        size = int(megabytes * 1e6)
        return ((text + "\n\n") * (size // max(len(text), 1) + 1))[:size].encode()
    rng = random.Random(7)
    texts = corpus(rng, max(1, int(megabytes * 1e6 / 900)))
    return "\n\n".join(texts).encode()


async def run(args: argparse.Namespace, data_dir: Path) -> str:
    values: dict[str, object] = {
        "ASSISTANTS_DATA_DIR": data_dir / "data",
        "ASSISTANTS_CODE_WARM_KERNELS": 0,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    if args.postgres:
        values["ASSISTANTS_DATABASE_URL"] = args.postgres
    runtime = Runtime(Settings(**values))  # type: ignore[arg-type]
    engine = await runtime.start()
    backend = "PostgreSQL" if args.postgres else "SQLite (WAL) in a temporary folder"
    try:
        content = document(args.megabytes, args.text)
        megabytes = len(content) / 1e6
        file = await engine.create_file(OWNER, filename="corpus.txt", purpose="assistants", content=content)

        began = time.perf_counter()
        store = await engine.vector_stores.create(OWNER, VectorStoreCreate(file_ids=[file.id]))
        await engine.vector_stores.wait_for_ingestion([store.id])  # Polls every 0.2 s.
        total = time.perf_counter() - began
        entry = await engine.vector_stores.get_file(OWNER, store.id, file.id)
        assert entry.status == "completed", entry.last_error

        began = time.perf_counter()
        text = extract_text("corpus.txt", content)
        chunks = chunk_text(text, max_tokens=800, overlap=400)
        prepare = time.perf_counter() - began
        rows = [ChunkRow(index=c.index, text=c.text, start=c.start, end=c.end, tokens=c.tokens) for c in chunks]
        began = time.perf_counter()
        await engine.vector_stores.index.add(OWNER, "vs_bench_insert", file.id, rows)
        insert = time.perf_counter() - began
        indexed = sum(len(row.text.encode()) for row in rows) / 1e6
        await engine.vector_stores.index.remove_store("vs_bench_insert")
        await engine.vector_stores.delete(OWNER, store.id)
        await engine.delete_file(OWNER, file.id)
        return "\n".join(
            [
                f"File search ingestion on {backend}; {machine()}.",
                f"One {megabytes:.1f} MB plain-text file ({'from ' + Path(args.text).name if args.text else 'synthetic'}), 800/400-token chunks ({len(rows):,} chunks, "
                f"{indexed:.1f} MB of chunk text with the overlap), no embeddings.",
                "",
                "| stage | seconds | MB/s of file text |",
                "|---|---:|---:|",
                f"| end to end (add to store → completed) | {total:.2f} | {megabytes / total:.1f} |",
                f"| extract + chunk | {prepare:.2f} | {megabytes / prepare:.1f} |",
                f"| index insert | {insert:.2f} | {megabytes / insert:.1f} |",
            ]
        )
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=20.0, help="size of the file (default 20)")
    parser.add_argument("--text", metavar="FILE", default=None, help="real text to use instead of synthetic words")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="postgresql+asyncpg://... to measure on PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    print_in_temp_folder("bench-ingest-", lambda folder: run(args, folder))


if __name__ == "__main__":
    main()
