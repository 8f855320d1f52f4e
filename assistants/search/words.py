"""The words of file search: what counts as a word, which words are too common to search for,
and what is left of a user's query once they are gone."""

from __future__ import annotations

import re
import unicodedata

MAX_QUERY_TERMS = 64
"""At most this many distinct words of a query are searched for; the rest are ignored."""

# PostgreSQL's `english` stop words (Snowball's list). Dropping the same words on SQLite keeps
# the backends in step and keeps an OR-ed query from matching every chunk through "the" or "is".
_STOP_WORD_LIST = """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom this
    that these those am is are was were be been being have has had having do does did doing a an
    the and but if or because as until while of at by for with about against between into through
    during before after above below to from up down in out on off over under again further then
    once here there when where why how all any both each few more most other some such no nor not
    only own same so than too very s t can will just don should now
"""
STOP_WORDS = frozenset(_STOP_WORD_LIST.split())

# A word is a run of letters and digits: what FTS5's unicode61 tokenizer and PostgreSQL's parser
# both treat as a token. The underscore is excluded because neither tokenizer keeps it.
WORD = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """The words of a user's query that are searched for: lower-cased, no stop words, no repeats.

    Compatibility normalisation first turns full-width letters and ligatures into plain ones, so
    the words match what the tokenizers make of the indexed text.
    """
    words = WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    kept = dict.fromkeys(w for w in words if w not in STOP_WORDS)
    return list(kept)[:MAX_QUERY_TERMS]
