"""PostgreSQL's full-text index: a posting list per (owner, store, word, file), ranked by BM25.

Ranking every chunk that matches any query word (`ts_rank_cd` over a GIN-matched `tsvector`) cost
about 10 µs per match, and a three-word query over 100,000 chunks matches up to 29,000 of them.
So the words are counted at ingestion instead (migration 0015): for each file, each word it holds
gets `search_postings` rows whose `postings` pack, per chunk holding the word, the chunk's `seq`,
how often the word occurs in it and the chunk's length in words (`POSTING`, 12 bytes), at most
`PART_POSTINGS` chunks a row. The primary key carries the postings too (`INCLUDE`), so a search
reads the rows of its few words within the asker's (owner, store) scopes from adjacent index
pages (an index-only scan once autovacuum has marked the pages visible), not from one heap page
per row. `search_file_lengths` keeps each file's chunk and word counts. Postings are scored here
with numpy: the sum over the query's words of BM25 with FTS5's constants and idf, where the number of
chunks, their average length and each word's document frequency are those of the searched
scopes. Both backends therefore rank alike; only FTS5 counts over its whole index.

Words are those of `words.WORD` after NFKC and case folding, as a query's are; stop words are not
indexed (a query never asks for them) but count towards a chunk's length; the rest are stripped
of diacritics and stemmed with Snowball's English stemmer (PostgreSQL's `english` configuration
uses the same), so "configuring" finds "configure" and "cafe" finds "café". Terms longer than
`MAX_TERM_BYTES` (base64 runs and the like) are not indexed: they would not fit an index entry.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import Stemmer

from .words import STOP_WORDS, WORD

K1 = 1.2
"""BM25's term-frequency saturation, as FTS5's `bm25()` uses."""
B = 0.75
"""BM25's length normalisation, as FTS5's `bm25()` uses."""
POSTING = np.dtype([("seq", "<i8"), ("tf", "<u2"), ("words", "<u2")])
"""One chunk in a posting list: its `seq`, the word's occurrences in it, its length in words."""
PART_POSTINGS = 100
"""Postings per `search_postings` row: 1,200 bytes, which keeps the row out of TOAST and its
primary-key entry (which includes them) well under B-tree's limit of about 2,700 bytes."""
MAX_TERM_BYTES = 128
"""Longer terms are neither indexed nor searched for."""
_CACHE_LIMIT = 500_000
"""Words whose search term is remembered; past this the memory starts again (junk tokens)."""

_terms: dict[str, str] = {}
# A PyStemmer object must not be used by two threads at once, and ingestion counts words in a
# worker thread while searches stem on the event loop.
_stem_lock = threading.Lock()
_stemmer = Stemmer.Stemmer("english")


def search_terms(words: Iterable[str]) -> list[str]:
    """The index terms of words that are not stop words (`query_terms` words): stemmed, no repeats."""
    return [term for term in dict.fromkeys(_term(word) for word in words) if len(term.encode()) <= MAX_TERM_BYTES]


def _term(word: str) -> str:
    term = _terms.get(word)
    if term is None:
        return _learn([word])[0]
    return term


def _learn(words: list[str]) -> list[str]:
    """Terms of new words (accents stripped, then stemmed), remembered for next time."""
    plain = [
        word if word.isascii() else "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
        for word in words
    ]
    with _stem_lock:
        stems: list[str] = _stemmer.stemWords(plain)
    if len(_terms) + len(words) > _CACHE_LIMIT:
        _terms.clear()
    _terms.update(zip(words, stems, strict=True))
    return stems


# For bytes.translate: ASCII letters and digits, lower-cased; other ASCII bytes become spaces;
# bytes of non-ASCII characters (UTF-8) are kept.
_ASCII_WORDS = bytes((c | 0x20 if chr(c).isalpha() else c) if chr(c).isalnum() else 0x20 for c in range(128)) + bytes(
    range(128, 256)
)


class _Vocabulary(dict[bytes, int]):
    """Numbers each new word (UTF-8) as it is first looked up (the lookups run at C speed)."""

    def __missing__(self, word: bytes) -> int:
        self[word] = number = len(self)
        return number


@dataclass(frozen=True)
class FilePostings:
    """What one file adds to the index: a packed posting list per term, and its size."""

    lists: dict[str, bytes]
    """Each term's `POSTING` records, one per chunk holding it, in `seqs` order."""
    chunks: int
    words: int
    """Words in all the file's chunks, stop words included (BM25's document lengths)."""


def file_postings(texts: Sequence[str], seqs: Sequence[int]) -> FilePostings:
    """Count the words of a file's chunks (`texts`, whose rows have `seqs`) into posting lists.

    CPU-bound (about half the cost of chunking the text); callers run it in a worker thread.
    """
    vocabulary = _Vocabulary()
    ids = array("q")
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        if text.isascii():
            # The same words as `WORD` finds in the case-folded text (an ASCII text is its own NFKC
            # form), ten times faster: bytes.translate lower-cases letters and blanks the rest.
            words = text.encode("ascii").translate(_ASCII_WORDS).split()
        else:
            # The same on UTF-8 bytes, where only the runs holding non-ASCII characters are split
            # by `WORD` (which also finds non-ASCII separators) to make them words.
            words = unicodedata.normalize("NFKC", text).casefold().encode().translate(_ASCII_WORDS).split()
            for at in reversed([at for at, run in enumerate(words) if not run.isascii()]):
                words[at : at + 1] = [word.encode() for word in WORD.findall(words[at].decode())]
        lengths[i] = len(words)
        ids.extend(map(vocabulary.__getitem__, words))
    if not ids:
        return FilePostings(lists={}, chunks=len(texts), words=0)
    # Each distinct word's term, or -1 for a stop word; words that stem alike share their term.
    known = [word.decode() for word in vocabulary]
    missing = [word for word in known if word not in STOP_WORDS and word not in _terms]
    if missing:
        _learn(missing)
    term_names: dict[str, int] = {}
    term_of = np.fromiter(
        (-1 if word in STOP_WORDS else term_names.setdefault(_terms.get(word) or _term(word), len(term_names)) for word in known),
        dtype=np.int64,
        count=len(known),
    )
    chunk_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    terms = term_of[np.frombuffer(ids, dtype=np.int64)]
    kept = terms >= 0
    keys = np.sort(terms[kept] * len(texts) + chunk_of[kept])
    if keys.size == 0:
        return FilePostings(lists={}, chunks=len(texts), words=int(lengths.sum()))
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    unique = keys[first]
    counts = np.diff(np.append(first, keys.size))
    chunk = unique % len(texts)
    records = np.empty(unique.size, dtype=POSTING)
    records["seq"] = np.asarray(seqs, dtype=np.int64)[chunk]
    records["tf"] = np.minimum(counts, 65535)
    records["words"] = np.minimum(lengths[chunk], 65535)
    term_ids = unique // len(texts)
    bounds = np.flatnonzero(np.concatenate(([True], term_ids[1:] != term_ids[:-1], [True])))
    names = list(term_names)
    lists = {
        names[int(term_ids[start])]: records[start:end].tobytes()
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        if len(names[int(term_ids[start])].encode()) <= MAX_TERM_BYTES
    }
    return FilePostings(lists=lists, chunks=len(texts), words=int(lengths.sum()))


def posting_rows(postings: FilePostings) -> Iterator[tuple[str, int, bytes]]:
    """`(term, part, postings)` for `search_postings`: each list cut into `PART_POSTINGS` pieces."""
    size = PART_POSTINGS * POSTING.itemsize
    for term, packed in postings.lists.items():
        for part, start in enumerate(range(0, len(packed), size)):
            yield term, part, packed[start : start + size]


class PostingList(NamedTuple):
    """One term's posting lists in the searched scopes, concatenated (as `_PG_POSTINGS` reads them)."""

    postings: bytes
    file_ids: list[str]
    """The file of each part, in order."""
    sizes: list[int]
    """The bytes of each part."""


def bm25_top(
    lists: Sequence[PostingList],
    chunks: int,
    words: int,
    limit: int,
    file_ids: Sequence[str] | None = None,
) -> list[tuple[int, float]]:
    """The `limit` best chunks as `(seq, bm25)`, best first (ties by `seq`).

    `lists` holds the query's terms' posting lists in the searched scopes, and `chunks` and
    `words` those scopes' totals. Document frequencies count every file of the scopes, so
    narrowing to `file_ids` changes which chunks are ranked, not their scores.
    """
    if not lists or chunks <= 0:
        return []
    average = max(words / chunks, 1e-9)
    wanted = None if file_ids is None else set(file_ids)
    seqs: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for term in lists:
        records = np.frombuffer(term.postings, dtype=POSTING)
        # FTS5's idf, which gives a word held by half the chunks or more almost no weight.
        idf = math.log((chunks - records.size + 0.5) / (records.size + 0.5))
        idf = idf if idf > 0 else 1e-6
        if wanted is not None:
            counts = np.asarray(term.sizes, dtype=np.int64) // POSTING.itemsize
            ends = np.cumsum(counts)
            keep = np.zeros(records.size, dtype=bool)
            for file_id, start, end in zip(term.file_ids, (ends - counts).tolist(), ends.tolist(), strict=True):
                if file_id in wanted:
                    keep[start:end] = True
            records = records[keep]
        tf = records["tf"].astype(np.float64)
        norm = K1 * (1 - B + B * records["words"].astype(np.float64) / average)
        seqs.append(records["seq"])
        scores.append(idf * tf * (K1 + 1) / (tf + norm))
    every = np.concatenate(seqs)
    if every.size == 0:
        return []
    weights = np.concatenate(scores)
    low = int(every.min())
    span = int(every.max()) - low + 1
    if span <= max(8 * every.size, 1 << 18):
        # Seqs close together (the usual case: a store's chunks were added in a few runs): sum
        # into an array indexed by seq, cheaper than sorting. Every posting scores above 0.
        summed = np.bincount(every - low, weights=weights, minlength=span)
        unique = np.flatnonzero(summed > 0)
        totals = summed[unique]
        unique += low
    else:
        unique, inverse = np.unique(every, return_inverse=True)
        totals = np.bincount(inverse, weights=weights)
    if unique.size > limit:
        # The `limit`-th best score, then every chunk at least that good, sorted with ties by seq.
        cut = np.partition(totals, unique.size - limit)[unique.size - limit]
        chosen = np.flatnonzero(totals >= cut)
    else:
        chosen = np.arange(unique.size)
    order = chosen[np.lexsort((unique[chosen], -totals[chosen]))][:limit]
    return [(int(unique[i]), float(totals[i])) for i in order]
