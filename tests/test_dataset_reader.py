"""The one streaming reader of JSONL texts (``builder.data.dataset.iter_text_rows``) and its callers: the policy
recipe's corpus, distillation texts, adversarial eval sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli import main as guard_build
from builder.data.dataset import MAX_LINE_BYTES, iter_text_rows, read_texts
from builder.errors import BuilderError, DatasetError
from builder.recipes.adversarial import EvalSet
from builder.recipes.policy_guard import read_corpus


def _jsonl(path: Path, *rows: object) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_rows_are_read_one_line_at_a_time_and_only_at_newlines(tmp_path: Path):
    path = tmp_path / "texts.jsonl"
    # U+2028 is a line break to str.splitlines(), not to JSONL.
    path.write_text('{"text": "one\u2028still one", "label": "safe"}\r\n\n   \n{"text": ""}')
    assert list(iter_text_rows(path)) == [{"text": "one\u2028still one", "label": "safe"}, {"text": ""}]
    assert read_texts(path) == ["one\u2028still one", ""]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a",', r"bad.jsonl:2: invalid JSON \(Expecting property name enclosed in double quotes at column"),
        ('["text", "a"]', r'bad.jsonl:2: a row must be a JSON object with a "text", got list'),
        ('{"message": "a"}', r'bad.jsonl:2: a row must have a "text"'),
        ('{"text": null}', r'bad.jsonl:2: "text" must be a string, got NoneType'),
        ("[" * 100_000, r"bad.jsonl:2: invalid JSON \(nested too deeply\)"),
    ],
)
def test_a_bad_row_is_named_by_file_and_line(tmp_path: Path, line: str, message: str):
    path = _jsonl(tmp_path / "bad.jsonl", {"text": "fine"}, line)
    with pytest.raises(DatasetError, match=message):
        read_texts(path)


def test_a_line_over_the_cap_is_an_error_naming_it_and_the_cap(tmp_path: Path):
    path = tmp_path / "long.jsonl"
    at_cap = json.dumps({"text": "x" * 20})
    path.write_bytes(f"{at_cap}\n{at_cap}".encode())  # the cap counts the line without its newline
    assert len(read_texts(path)) == 2
    assert [row["text"] for row in iter_text_rows(path, max_line_bytes=len(at_cap))] == ["x" * 20] * 2
    path.write_bytes(f"{at_cap}\n{at_cap[:-1]} }}\n".encode())
    with pytest.raises(DatasetError, match=rf"long.jsonl:2: line longer than {len(at_cap)} bytes"):
        list(iter_text_rows(path, max_line_bytes=len(at_cap)))
    # The default cap holds for every caller, the corpus reader included.
    _jsonl(path, {"text": "fine"}, {"text": "x" * MAX_LINE_BYTES})
    with pytest.raises(DatasetError, match=rf"long.jsonl:2: line longer than {MAX_LINE_BYTES} bytes"):
        read_corpus(path, 100)


def test_unreadable_files_and_bytes_are_named(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"missing.jsonl: cannot read: No such file"):
        read_texts(tmp_path / "missing.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin1.jsonl:2: is not UTF-8 text \(invalid continuation byte"):
        read_texts(path)


def test_the_limit_stops_reading_before_later_bad_lines(tmp_path: Path):
    path = _jsonl(tmp_path / "texts.jsonl", {"text": "a"}, {"text": "b"}, {"text": "c"}, "not json", "x" * 100)
    assert read_texts(path, limit=3) == ["a", "b", "c"]
    assert read_corpus(path, 3) == ["a", "b", "c"]
    with pytest.raises(DatasetError, match="texts.jsonl:4: invalid JSON"):
        read_texts(path, limit=4)
    with pytest.raises(DatasetError, match="texts.jsonl:4: invalid JSON"):
        read_corpus(path, 4)


def test_a_corpus_folder_gives_each_file_an_equal_share_and_skips_rows_without_a_str_text(tmp_path: Path):
    folder = tmp_path / "logs"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", *({"text": f"a{i}"} for i in range(10)), "later lines are never read")
    _jsonl(folder / "b.jsonl", {"text": None, "tool_calls": []}, {"text": "b0"}, {"text": "a0"}, {"text": "b1"}, "{")
    assert read_corpus(folder, 4) == ["a0", "a1", "b0", "b1"]  # duplicates and a null content skipped, not counted
    with pytest.raises(DatasetError, match=r"b.jsonl:5: invalid JSON"):
        read_corpus(folder, 10)  # b's share of 5 reads past its last text
    with pytest.raises(BuilderError, match="no such JSONL file, nor a folder with any"):
        read_corpus(tmp_path / "missing.jsonl", 100)


def test_an_eval_set_reads_its_split_through_the_same_reader(tmp_path: Path):
    path = _jsonl(
        tmp_path / "eval.jsonl",
        {"text": "kept", "label": "unsafe", "meta": {"split": "test"}},
        {"text": "other split", "label": "safe", "meta": {"split": "train"}},
        {"text": "meta is not an object", "label": "safe", "meta": "test"},
        {"text": "kept too", "labels": []},
    )
    texts, truth = EvalSet(name="x", path=path, split="test").load()
    assert (texts, truth.tolist()) == (["kept"], [True])
    texts, truth = EvalSet(name="x", path=path).load()
    assert (texts, truth.tolist()) == (
        ["kept", "other split", "meta is not an object", "kept too"],
        [True, False, False, False],
    )
    _jsonl(path, {"text": 3, "label": "safe"})
    with pytest.raises(DatasetError, match=r'eval.jsonl:1: "text" must be a string, got int'):
        EvalSet(name="x", path=path).load()


def test_the_cli_turns_a_bad_texts_file_into_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = _jsonl(tmp_path / "texts.jsonl", {"text": "fine"}, "{oops")
    assert guard_build(["distill", "--texts", str(path), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert f"{path}:2: invalid JSON" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
