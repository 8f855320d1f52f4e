"""Full-text chunk search: bulk insert throughput and query latency over 100,000 chunks.

In-process: a migrated `SqlStore` on a temporary SQLite database (or ``--postgres URL``, a blank
database) and the `SqlChunkIndex` over it. The corpus is synthetic but shaped like English: each
chunk is 150 words (about 200 tokens; a quarter of the 800-token chunks file search makes by
default), about 45% of them stop words and the rest drawn from 20,000 made-up content words whose
frequencies follow English's Zipf curve from rank 128 down (the stop words hold the top ranks), so
the commonest content word is in about one chunk in seven and most words are rare. Chunks
are added 100 per file, one `add` per file, into one owner's vector store.

Queries are six words picked from a random chunk, stop words included, the way a question shares
words with its answer; after stop words go, they search for about three words, skewed towards
frequent ones, which is the expensive case for OR-ed full-text queries. Each query asks for the
top 20 hits. Prints a Markdown table; asserts nothing. Usage::

    .venv/bin/python bench/search_query.py
    .venv/bin/python bench/search_query.py --quick
    .venv/bin/python bench/search_query.py --postgres postgresql+asyncpg://user@host/db
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from assistants.search.index import STOP_WORDS, ChunkRow, SqlChunkIndex, query_terms  # noqa: E402
from assistants.store import SqlStore  # noqa: E402
from assistants.store.migrate import upgrade  # noqa: E402
from bench._common import machine, percentile, print_in_temp_folder  # noqa: E402


class HashEmbedder:
    """A stand-in embedding model: each word adds 1 to a hashed dimension; rows are unit length."""

    model = "bench-hash"

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                matrix[row, hash(word) % self.dimensions] += 1.0
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms > 0, norms, 1.0)


OWNER = "user_bench"
STORE = "vs_bench"
WORDS_PER_CHUNK = 150
CHUNKS_PER_FILE = 100
CONTENT_WORDS = 20_000
STOP_SHARE = 0.45
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["ar", "en", "ol", "ist", "ump", "ex"]


def vocabulary(rng: random.Random) -> list[str]:
    """Made-up content words of two to four syllables, none of them a stop word, all distinct."""
    words: dict[str, None] = {}
    while len(words) < CONTENT_WORDS:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in STOP_WORDS:
            words[word] = None
    return list(words)


def corpus(rng: random.Random, chunks: int) -> list[str]:
    """`chunks` chunk texts of `WORDS_PER_CHUNK` words each."""
    content = vocabulary(rng)
    # Content words continue English's Zipf curve below the stop words, which hold its top ranks:
    # the most frequent content word is about the 130th most frequent word, not the first.
    ranks = range(len(STOP_WORDS) + 1, len(STOP_WORDS) + 1 + len(content))
    content_weights = list(itertools.accumulate(rank**-1.07 for rank in ranks))
    stops = sorted(STOP_WORDS)
    total = chunks * WORDS_PER_CHUNK
    stop_draws = iter(rng.choices(stops, k=total))
    content_draws = iter(rng.choices(content, cum_weights=content_weights, k=total))
    texts = []
    for _ in range(chunks):
        words = [next(stop_draws) if rng.random() < STOP_SHARE else next(content_draws) for _ in range(WORDS_PER_CHUNK)]
        texts.append(" ".join(words).capitalize() + ".")
    return texts


async def fill(index: SqlChunkIndex, texts: Sequence[str]) -> float:
    """Add the corpus file by file; returns the seconds it took."""
    began = time.perf_counter()
    for start in range(0, len(texts), CHUNKS_PER_FILE):
        rows, offset = [], 0
        for i, text in enumerate(texts[start : start + CHUNKS_PER_FILE]):
            rows.append(ChunkRow(index=i, text=text, start=offset, end=offset + len(text), tokens=len(text.split()) * 4 // 3))
            offset += len(text)
        await index.add(OWNER, STORE, f"file-{start // CHUNKS_PER_FILE}", rows)
    return time.perf_counter() - began


async def measure(
    index: SqlChunkIndex, queries: Sequence[str], file_ids: list[str] | None = None
) -> tuple[list[float], list[int]]:
    """Milliseconds per search, and how many hits each returned."""
    latencies, hits = [], []
    for query in queries:
        began = time.perf_counter()
        found = await index.search(OWNER, [STORE], query, limit=20, file_ids=file_ids)
        latencies.append((time.perf_counter() - began) * 1000)
        hits.append(len(found))
    return latencies, hits


async def run(args: argparse.Namespace, data_dir: Path) -> str:
    url = args.postgres or f"sqlite+aiosqlite:///{data_dir / 'bench.db'}"
    backend = "PostgreSQL" if args.postgres else "SQLite (WAL) in a temporary folder"
    store = SqlStore.from_url(url)
    await upgrade(store.engine)
    index = SqlChunkIndex(store, HashEmbedder(args.hybrid) if args.hybrid else None)
    rng = random.Random(1234)
    try:
        began = time.perf_counter()
        texts = corpus(rng, args.chunks)
        print(f"made {len(texts):,} chunks in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        seconds = await fill(index, texts)
        print(f"inserted in {seconds:.1f} s", file=sys.stderr)
        if args.postgres:
            # Autovacuum would analyse the new rows soon after, and vacuum them (it does after
            # inserts too), which lets searches read posting lists by index-only scans; do it now
            # so the plans are settled.
            async with store.engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(sa.text("ANALYZE search_chunks"))
                await autocommit.execute(sa.text("VACUUM ANALYZE search_postings"))
        queries = [" ".join(rng.sample(rng.choice(texts).rstrip(".").lower().split(), 6)) for _ in range(args.queries)]
        # As `/v1/vector_stores/{id}/search` searches while some file of the store is not completed
        # (or an attribute filter leaves some out): naming the files it may return.
        files = [f"file-{n}" for n in range(-(-len(texts) // CHUNKS_PER_FILE))] if args.file_filter else None
        await measure(index, queries[:10], files)  # Warm up the caches and the statement cache.
        latencies, hits = await measure(index, queries, files)
        terms = sum(len(query_terms(q)) for q in queries) / len(queries)
        megabytes = sum(len(t) for t in texts) / 1e6
        return "\n".join(
            [
                f"{f'Hybrid ({args.hybrid}-dimension vectors)' if args.hybrid else 'Full-text'} chunk search"
                f" on {backend}; {machine()}"
                f"{'; quick run' if args.quick else ''}.",
                f"{len(texts):,} chunks of {WORDS_PER_CHUNK} words ({megabytes:.0f} MB of text), "
                f"{len(queries)} queries of 6 words ({terms:.1f} searched words on average), top 20"
                f"{', naming the files to search, as the search endpoint does while some are not completed' if args.file_filter else ''}.",
                "",
                "| chunks | insert chunks/s | insert MB/s | query p50 ms | query p99 ms | mean hits |",
                "|---:|---:|---:|---:|---:|---:|",
                f"| {len(texts):,} | {len(texts) / seconds:,.0f} | {megabytes / seconds:.2f} "
                f"| {percentile(latencies, 50):.1f} | {percentile(latencies, 99):.1f} | {sum(hits) / len(hits):.1f} |",
            ]
        )
    finally:
        if args.postgres:
            # A shared database keeps only what it had.
            await index.remove_store(STORE)
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (10,000 chunks, 50 queries)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="postgresql+asyncpg://... to measure on PostgreSQL instead of SQLite")
    parser.add_argument("--chunks", type=int, default=None, help="how many chunks (default 100,000)")
    parser.add_argument("--queries", type=int, default=None, help="how many timed queries (default 300)")
    parser.add_argument("--file-filter", action="store_true",
                        help="name the files to search, as the search endpoint does while some are not completed")
    parser.add_argument("--hybrid", type=int, metavar="DIMS", default=0, help="hybrid retrieval with DIMS-dimensional vectors")
    args = parser.parse_args(argv)
    if args.chunks is None:
        args.chunks = 10_000 if args.quick else 100_000
    if args.queries is None:
        args.queries = 50 if args.quick else 300
    print_in_temp_folder("bench-search-", lambda folder: run(args, folder))


if __name__ == "__main__":
    main()
