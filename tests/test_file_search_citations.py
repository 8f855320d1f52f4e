"""Citation markers in an answer, at the unit level: which `[n]` become `file_citation`
annotations, how grouped markers (`[1, 2]`, `[1-3]`) are written out, and that markers in
Markdown code are left alone. `test_file_search_runs.py` checks the same through a run."""

from __future__ import annotations

from assistants.tools.file_search import expand_marker_groups, file_citations

CITED = {1: "file-a", 2: "file-b", 3: "file-c", 4: "file-a"}


def cited(text: str) -> list[tuple[str, str, int]]:
    """(marker, file, start) of each annotation, after checking it slices the text at its marker."""
    found = []
    for note in file_citations(text, CITED):
        start, end = int(str(note["start_index"])), int(str(note["end_index"]))
        assert text[start:end] == note["text"], note
        found.append((str(note["text"]), str(note["file_citation"]["file_id"]), start))  # type: ignore[index]
    return found


def test_groups_and_ranges_are_written_out_as_single_markers() -> None:
    assert expand_marker_groups("Both [1, 2] and all [1-3], or [2,4] and [1 – 2].", CITED) == (
        "Both [1][2] and all [1][2][3], or [2][4] and [1][2]."
    )
    assert expand_marker_groups("Mixed [1, 3-4] and repeated [2, 2].", CITED) == "Mixed [1][3][4] and repeated [2]."
    text = expand_marker_groups("Ça coûte 5 € — voilà [1, 2].", CITED)
    assert text == "Ça coûte 5 € — voilà [1][2]."
    assert cited(text) == [("[1]", "file-a", text.index("[1]")), ("[2]", "file-b", text.index("[2]"))] == [("[1]", "file-a", 21), ("[2]", "file-b", 24)]


def test_groups_that_are_not_all_citations_stay_as_they_are() -> None:
    for text in (
        "The matrix [0, 1] has a zero.",  # 0 is never a marker
        "Results [1, 9] where 9 was not found.",
        "Backwards [3-1] and empty [2-2].",
        "Chained [1-2-3] is no range.",
        "Huge [1-400] stays.",
    ):
        assert expand_marker_groups(text, CITED) == text, text
        assert [marker for marker, _, _ in cited(text)] == []


def test_markers_in_inline_code_and_fenced_blocks_are_not_citations() -> None:
    text = (
        "Use `items[1]` or ``a `[2]` b`` in code [1].\n"
        "```python\nvalues = data[2]\nrows = grid[1, 2]\n```\n"
        "~~~\n[3]\n~~~\n"
        "After the blocks [2, 3] and an unclosed ` tick [4].\n"
    )
    expanded = expand_marker_groups(text, CITED)
    assert "grid[1, 2]" in expanded and "[2][3]" in expanded
    assert [(marker, file_id) for marker, file_id, _ in cited(expanded)] == [
        ("[1]", "file-a"), ("[2]", "file-b"), ("[3]", "file-c"), ("[4]", "file-a")
    ]
    # An unclosed fence runs to the end of the answer.
    assert cited("See [1].\n```\nx = a[2]\n") == [("[1]", "file-a", 4)]
    # A longer closing fence closes; a shorter one does not.
    assert [m for m, _, _ in cited("````\n[1]\n```\n[2]\n`````\n[3]")] == ["[3]"]
    # Backticks in a backtick fence's info string make it inline code, not a fence.
    assert [m for m, _, _ in cited("``` not `a fence` [1]")] == ["[1]"]
