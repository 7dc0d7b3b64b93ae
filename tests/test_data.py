"""Reading data files: JSON lines with line-numbered errors, documents from .jsonl."""

from __future__ import annotations

import pytest

from optimum_depth.data import iter_jsonl, read_documents


def test_iter_jsonl_skips_blank_lines_and_names_the_bad_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n\n  \n"b"\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"text": "a"}), (4, "b")]
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        list(iter_jsonl(path))


def test_read_documents_from_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "one"}\n{"instruction": "do", "output": "done"}\n', encoding="utf-8")
    assert read_documents(path) == ["one", "do\ndone"]
    path.write_text('{"text": "one"}\n{"title": "no text"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 has no `text` field"):
        read_documents(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="No documents"):
        read_documents(path)
