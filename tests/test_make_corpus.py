"""scripts/make_corpus.py's chapter splitting and its reading of one book out of a file of
several (War and Peace in Norvig's big.txt), on hand-made text: no package is downloaded."""

from __future__ import annotations

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def mc():
    return load_script("make_corpus")


def test_a_chapter_starts_at_the_part_heading_right_before_it(mc):
    paras = ["Title", "BOOK ONE: 1805", "CHAPTER I", "a", "CHAPTER II", "b",
             "BOOK TWO: 1805", "CHAPTER I", "c", "FIRST EPILOGUE: 1813 --20", "CHAPTER I", "d",
             "BOOK TWO: 1805 is not a heading here", "CHAPTER II", "e"]
    part = r"BOOK [A-Z]+: [0-9 -]+|(?:FIRST|SECOND) EPILOGUE.*"
    assert mc.chapter_starts(paras, r"CHAPTER [IVXL]+", part) == [1, 4, 6, 9, 13]
    assert mc.chapter_starts(paras, r"CHAPTER [IVXL]+") == [2, 4, 7, 10, 13]
    assert mc.chapter_starts(["CHAPTER I", "x"], r"CHAPTER [IVXL]+", part) == [0]


def _gutenberg_book(title: str, chapters: int, author: str = "Someone") -> str:
    body = "\n\n".join(f"BOOK ONE: 1805\n\nCHAPTER {'I' * (i + 1)}\n\nThe {title} text,\n  chapter {i}."
                       for i in range(chapters))
    return (f"The Project Gutenberg EBook of {title}, by {author}\n\nTitle: {title}\n\n"
            f"*** START OF THE PROJECT GUTENBERG EBOOK, {title.upper()} ***\n\n\n{title}\n\n"
            f"{body}\n\n\n*** END OF THE PROJECT GUTENBERG EBOOK, {title.upper()} ***\n\n"
            "Project Gutenberg's licence, which must not reach the corpus.\n\n")


def test_one_book_is_read_out_of_a_file_of_several(mc, tmp_path, monkeypatch):
    member = "pkg/data/big.txt"
    path = tmp_path / "tolstoy" / member
    path.parent.mkdir(parents=True)
    path.write_text(_gutenberg_book("Other Book", 6) + _gutenberg_book("War and Peace", 5, "Leo Tolstoy")
                    + "word  lists  follow\n", encoding="utf-8")
    novel = dict(next(n for n in mc.NOVELS if n["slug"] == "war-and-peace"), member=member)
    monkeypatch.setattr(mc, "NOVELS", [novel])
    assert mc.novel_books(tmp_path, ("mobydick",)) == []  # not asked for: not read
    [book] = mc.novel_books(tmp_path, ("tolstoy",))
    assert (book.source, book.slug, book.front) == ("tolstoy", "war-and-peace", ["War and Peace"])
    assert len(book.chapters) == 5
    assert all(ch[:2] == ["BOOK ONE: 1805", f"CHAPTER {'I' * (i + 1)}"] for i, ch in enumerate(book.chapters))
    assert book.chapters[3][2] == "The War and Peace text, chapter 3."
    text = " ".join(p for ch in book.chapters for p in ch)
    assert "Other Book" not in text and "licence" not in text and "word" not in text


def test_a_book_missing_from_its_file_stops_the_script(mc, tmp_path, monkeypatch):
    member = "pkg/data/big.txt"
    path = tmp_path / "tolstoy" / member
    path.parent.mkdir(parents=True)
    path.write_text(_gutenberg_book("Other Book", 6), encoding="utf-8")
    novel = dict(next(n for n in mc.NOVELS if n["slug"] == "war-and-peace"), member=member)
    monkeypatch.setattr(mc, "NOVELS", [novel])
    with pytest.raises(SystemExit, match="War and Peace.*not found once"):
        mc.novel_books(tmp_path, ("tolstoy",))
