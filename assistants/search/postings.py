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


def file_postings(texts: Sequence[str], seqs: Sequence[int], spans: Sequence[tuple[int, int]] | None = None) -> FilePostings:
    """Count the words of a file's chunks (`texts`, whose rows have `seqs`) into posting lists.

    With `spans`, each chunk's (start, end) offsets in the file's text, the text that overlapping
    chunks share is counted once (`_shared_pieces`), which halves the work for the usual 800/400
    chunking; the counts are the same as chunk by chunk. CPU-bound: callers run it in a worker thread.
    """
    pieces = _shared_pieces(texts, spans) if spans is not None else None
    if pieces is None:
        pieces = _Pieces.chunk_by_chunk(texts)
    vocabulary = _Vocabulary()
    ids = array("i")
    lengths = np.zeros(len(pieces.texts), dtype=np.int64)
    for i, text in enumerate(pieces.texts):
        words = _words(text)
        lengths[i] = len(words)
        ids.extend(map(vocabulary.__getitem__, words))
    # A chunk's length is the sum of its pieces'.
    chunk_lengths = np.zeros(len(texts), dtype=np.int64)
    np.add.at(chunk_lengths, pieces.holders, np.repeat(lengths, pieces.counts))
    total_words = int(chunk_lengths.sum())
    if not ids:
        return FilePostings(lists={}, chunks=len(texts), words=total_words)
    # Each distinct word's term, or -1 for a stop word; words that stem alike share their term.
    known = [word.decode() for word in vocabulary]
    missing = [word for word in known if word not in STOP_WORDS and word not in _terms]
    if missing:
        _learn(missing)
    term_names: dict[str, int] = {}
    term_of = np.fromiter(
        (-1 if word in STOP_WORDS else term_names.setdefault(_terms.get(word) or _term(word), len(term_names)) for word in known),
        dtype=np.int32,
        count=len(known),
    )
    # Each word counts in every chunk that holds its piece: its first holder, its second, ...
    # (32-bit arrays where they suffice: there are millions of words, and on a fresh process
    # the memory costs more than the arithmetic.)
    terms = term_of[np.frombuffer(ids, dtype=np.int32)]
    kept = terms >= 0
    piece_of = np.repeat(np.arange(len(pieces.texts), dtype=np.int32), lengths)[kept]
    terms = terms[kept]
    if terms.size == 0:
        # Only stop words: they count in the chunks' lengths, and no term is indexed.
        return FilePostings(lists={}, chunks=len(texts), words=total_words)
    holders = pieces.counts[piece_of]
    slots = pieces.starts[piece_of]
    keys = [terms.astype(np.int64) * len(texts) + pieces.holders[slots]]
    for nth in range(1, int(pieces.counts.max())):
        more = holders > nth
        keys.append(terms[more].astype(np.int64) * len(texts) + pieces.holders[slots[more] + nth])
    term_ids, chunk, counts = _group_count(np.concatenate(keys) if len(keys) > 1 else keys[0], len(texts))
    records = np.empty(chunk.size, dtype=POSTING)
    records["seq"] = np.asarray(seqs, dtype=np.int64)[chunk]
    records["tf"] = np.minimum(counts, 65535)
    records["words"] = np.minimum(chunk_lengths[chunk], 65535)
    bounds = np.flatnonzero(np.concatenate(([True], term_ids[1:] != term_ids[:-1], [True])))
    names = list(term_names)
    lists = {
        names[int(term_ids[start])]: records[start:end].tobytes()
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        if len(names[int(term_ids[start])].encode()) <= MAX_TERM_BYTES
    }
    return FilePostings(lists=lists, chunks=len(texts), words=total_words)


def _words(text: str) -> list[bytes]:
    """The words of `text` as `WORD` finds them in its case-folded NFKC form, as UTF-8."""
    if text.isascii():
        # An ASCII text is its own NFKC form; bytes.translate lower-cases letters and blanks the
        # rest, ten times faster than the regular expression.
        return text.encode("ascii").translate(_ASCII_WORDS).split()
    # The same on UTF-8 bytes, where only the runs holding non-ASCII characters are split by
    # `WORD` (which also finds non-ASCII separators) to make them words.
    words = unicodedata.normalize("NFKC", text).casefold().encode().translate(_ASCII_WORDS).split()
    for at in reversed([at for at, run in enumerate(words) if not run.isascii()]):
        words[at : at + 1] = [word.encode() for word in WORD.findall(words[at].decode())]
    return words


def _group_count(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (term, chunk) pairs of `keys` (term * size + chunk), sorted by term then
    chunk, and how often each occurs."""
    keys.sort()
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    unique = keys[first]
    return unique // size, unique % size, np.diff(first, append=keys.size)


@dataclass(frozen=True)
class _Pieces:
    """Texts that together hold a file's chunks, each counted once: piece `p` lies in the chunks
    `holders[starts[p]:starts[p] + counts[p]]`, and each chunk is its pieces end to end."""

    texts: list[str]
    starts: np.ndarray
    counts: np.ndarray
    holders: np.ndarray

    @classmethod
    def chunk_by_chunk(cls, texts: Sequence[str]) -> _Pieces:
        own = np.arange(len(texts), dtype=np.int32)
        return cls(list(texts), own, np.ones(len(texts), dtype=np.int32), own)


def _shared_pieces(texts: Sequence[str], spans: Sequence[tuple[int, int]]) -> _Pieces | None:
    """The pieces between all the chunks' starts and ends, or None if the spans do not fit the
    texts or the chunks disagree on the text they share.

    A chunk is counted on its own instead where one of its pieces begins at a cut that may fall
    inside a word (`_word_cut`): counting its pieces apart would split that word.
    """
    n = len(texts)
    if n < 2 or len(spans) != n:
        return None
    starts = np.fromiter((start for start, _ in spans), dtype=np.int64, count=n)
    ends = np.fromiter((end for _, end in spans), dtype=np.int64, count=n)
    sizes = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    if (ends - starts != sizes).any() or (np.diff(starts) <= 0).any() or (np.diff(ends) < 0).any():
        return None
    # A chunk shares text only with its neighbours' shared text (starts and ends both rise), so
    # neighbours that agree make every holder of a piece agree.
    for i in np.flatnonzero(starts[1:] < ends[:-1]).tolist():
        if not texts[i + 1].startswith(texts[i][starts[i + 1] - starts[i] :]):
            return None
    cuts = np.unique(np.concatenate((starts, ends)))
    # The piece [a, b) lies in the chunks from `first` (the first to end after a) to `last` - 1
    # (the last to start at or before a).
    first = np.searchsorted(ends, cuts[:-1], side="right")
    last = np.searchsorted(starts, cuts[:-1], side="right")
    held = np.flatnonzero(last > first).tolist()
    alone = np.zeros(n, dtype=bool)
    for k in held:
        a, holder = int(cuts[k]), int(first[k])
        offset = int(starts[holder])
        if a > offset and not _word_cut(texts[holder][a - offset - 1], texts[holder][a - offset]):
            # Every holder that started before the cut has it inside.
            alone[holder : np.searchsorted(starts, a, side="left")] = True
    pieces: list[str] = []
    counts: list[int] = []
    holders: list[int] = []
    for k in held:
        shared = [chunk for chunk in range(int(first[k]), int(last[k])) if not alone[chunk]]
        if shared:
            a, b, offset = int(cuts[k]), int(cuts[k + 1]), int(starts[shared[0]])
            pieces.append(texts[shared[0]][a - offset : b - offset])
            counts.append(len(shared))
            holders.extend(shared)
    for chunk in np.flatnonzero(alone).tolist():
        pieces.append(texts[chunk])
        counts.append(1)
        holders.append(chunk)
    count_array = np.asarray(counts, dtype=np.int32)
    return _Pieces(pieces, np.cumsum(count_array, dtype=np.int32) - count_array, count_array, np.asarray(holders, dtype=np.int32))


def _word_cut(before: str, after: str) -> bool:
    """Whether a text cut between two characters splits no word whatever `_words` does to either
    side: `after` is ASCII (no composition or reordering reaches back across an ASCII character)
    and is a separator, or is a letter or digit after an ASCII separator."""
    if not after.isascii():
        return False
    return not after.isalnum() or (before.isascii() and not before.isalnum())


def posting_rows(postings: FilePostings, parts: dict[str, int] | None = None) -> Iterator[tuple[str, int, bytes]]:
    """`(term, part, postings)` for `search_postings`: each list cut into `PART_POSTINGS` pieces.

    `parts` carries each term's part numbers on from an earlier batch of the same file's chunks
    (and is updated), so a file can be counted and stored a batch at a time.
    """
    size = PART_POSTINGS * POSTING.itemsize
    for term, packed in postings.lists.items():
        part = parts.get(term, 0) if parts is not None else 0
        for start in range(0, len(packed), size):
            yield term, part, packed[start : start + size]
            part += 1
        if parts is not None:
            parts[term] = part


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
