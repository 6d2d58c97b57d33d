import os
import stat

import pytest

from muscle.errors import MuscleError
from muscle.io import atomic_open, read_jsonl, write_json


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_atomic_write_uses_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(MuscleError, match=r"bad.jsonl:3"):
        list(read_jsonl(f))
