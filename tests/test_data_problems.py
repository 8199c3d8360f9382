"""Canonical problems JSON Lines: a malformed line is reported at the file's line and the column in that line."""

from __future__ import annotations

import json

import pytest

from coderl_ray.data.jsonl import iter_jsonl, load_jsonl
from coderl_ray.data.problems import ProblemError, loads_line, read_jsonl, read_problems

GOOD = {"problem_id": "x/1", "question": "q", "tests": {"kind": "stdio", "inputs": ["1\n"], "outputs": ["1\n"]}}


def _file(tmp_path, third_line: str):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "problem_id": "x/2"}) + "\n" + third_line + "\n")
    return path


@pytest.mark.parametrize("read", [read_problems, load_jsonl, read_jsonl, lambda p: list(iter_jsonl(p))])
def test_a_record_cut_short_is_reported_at_its_line_not_json_s_line_2(tmp_path, read):
    # json.loads of '{"problem_id": "x/3",\n' says "line 2 column 1": the newline after the record, in json's count of
    # the text it was given. That line 2 is not the file's (3).
    path = _file(tmp_path, '{"problem_id": "x/3",')
    with pytest.raises(ProblemError) as info:
        read(path)
    message = str(info.value)
    assert message == (f"{path}:3: bad JSON: the line ends before the record does "
                       "(Expecting property name enclosed in double quotes)")
    assert "line 2" not in message


def test_an_error_inside_a_line_gives_its_column_in_that_line(tmp_path):
    # '{"problem_id": "x/3" "question": 1}': after the value "x/3" (columns 16-20) comes a space (21), then '"' at
    # column 22, where json expected a comma. The context shown: the line up to 10 characters from there (31).
    path = _file(tmp_path, '{"problem_id": "x/3" "question": 1}')
    with pytest.raises(ProblemError) as info:
        read_problems(path)
    assert str(info.value) == (f"{path}:3: bad JSON at column 22 of that line (Expecting ',' delimiter): "
                               + repr('{"problem_id": "x/3" "question"'))


def test_the_context_shown_is_the_error_s_neighbourhood():
    # '{"question": "' is 14 characters, the x's 25 more, then '"' (index 39) and a space (40): json expected a comma
    # at index 41, column 42. Shown: the 30 characters before it (from index 11, so cut on the left) and 10 from it.
    line = '{"question": "' + "x" * 25 + '" 1234567890123}'
    with pytest.raises(ProblemError) as info:
        loads_line(line, "f.jsonl:7")
    assert str(info.value) == ("f.jsonl:7: bad JSON at column 42 of that line (Expecting ',' delimiter): "
                               "..." + repr(': "' + "x" * 25 + '" 1234567890'))
    assert loads_line('{"a": [1, 2]}\r\n', "f.jsonl:1") == {"a": [1, 2]}
