"""Citation markers in an answer, at the unit level: which `[n]` become `file_citation`
annotations, and that markers in Markdown code are left alone. `test_file_search_runs.py` checks
the same through a run."""

from __future__ import annotations

from assistants.tools.file_search import file_citations

CITED = {1: "file-a", 2: "file-b", 3: "file-c", 4: "file-a"}


def cited(text: str) -> list[tuple[str, str, int]]:
    """(marker, file, start) of each annotation, after checking it slices the text at its marker."""
    found = []
    for note in file_citations(text, CITED):
        start, end = int(str(note["start_index"])), int(str(note["end_index"]))
        assert text[start:end] == note["text"], note
        found.append((str(note["text"]), str(note["file_citation"]["file_id"]), start))  # type: ignore[index]
    return found


def test_single_markers_are_citations_and_grouped_ones_stay_as_written() -> None:
    text = "Ça coûte 5 € — voilà [1]. Both [1, 2] and all [1-3] stay text; [2] is one."
    assert cited(text) == [("[1]", "file-a", 21), ("[2]", "file-b", text.index("[2] is"))]
    assert cited("The matrix [0] and [9]: no results of the run.") == []


def test_markers_in_inline_code_and_fenced_blocks_are_not_citations() -> None:
    text = (
        "Use `items[1]` or ``a `[2]` b`` in code [1].\n"
        "```python\nvalues = data[2]\nrows = grid[1, 2]\n```\n"
        "~~~\n[3]\n~~~\n"
        "After the blocks [2, 3] and an unclosed ` tick [4].\n"
    )
    assert [(marker, file_id) for marker, file_id, _ in cited(text)] == [("[1]", "file-a"), ("[4]", "file-a")]
    # An unclosed fence runs to the end of the answer.
    assert cited("See [1].\n```\nx = a[2]\n") == [("[1]", "file-a", 4)]
    # A longer closing fence closes; a shorter one does not.
    assert [m for m, _, _ in cited("````\n[1]\n```\n[2]\n`````\n[3]")] == ["[3]"]
    # Backticks in a backtick fence's info string make it inline code, not a fence.
    assert [m for m, _, _ in cited("``` not `a fence` [1]")] == ["[1]"]
