import os
import re
import stat

import pytest

from muscle.errors import MuscleError
from muscle.io import atomic_open, check_out_apart, read_jsonl, remove_leftovers, write_json


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("partial")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left


def test_a_killed_writes_leftovers_go_with_the_next_write(tmp_path):
    """A run killed mid-write leaves its hidden temporary file (or folder); the next write of
    that name removes it, and no other file's."""
    (tmp_path / ".out.json.k1ll3d_1.tmp").write_text("partial")
    (tmp_path / ".out.json.summary.json.k1ll3d_1.tmp").write_text("another file's")
    (tmp_path / ".out.jsonl.k1ll3d_1.tmp").write_text("another file's")
    write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".out.json.summary.json.k1ll3d_1.tmp", ".out.jsonl.k1ll3d_1.tmp", "out.json",
    ]  # fmt: skip
    (tmp_path / ".cache[1].abcdefgh").mkdir()  # a folder, its name with glob characters
    (tmp_path / ".cache[1].abcdefgh" / "a.npy").write_bytes(b"x")
    (tmp_path / ".cache1.abcdefgh").mkdir()
    remove_leftovers(tmp_path / "cache[1]")
    assert (
        not (tmp_path / ".cache[1].abcdefgh").exists() and (tmp_path / ".cache1.abcdefgh").is_dir()
    )


def test_a_write_whose_temporary_file_another_run_removed_is_one_line(tmp_path):
    """Two runs writing one path: the second's clean-up removes the first's temporary file as
    a leftover; the first then stops with one line, not a FileNotFoundError."""
    target = tmp_path / "report.md"
    message = r"report.md: another run is writing it at the same"
    with pytest.raises(MuscleError, match=message), atomic_open(target) as fh:
        fh.write("first run")
        remove_leftovers(target, ".tmp")  # what the second run's write does first
    assert not target.exists() and list(tmp_path.iterdir()) == []


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


def test_check_out_apart_refuses_an_output_on_an_input(tmp_path, monkeypatch):
    """An output may not be, hold or sit inside an input; beside one is fine, and inputs that
    are no local path (hub ids) are skipped."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "d.jsonl").write_text("{}\n")
    inputs = {"--model": "model", "--data": str(tmp_path / "d.jsonl"), "--adapter": None}
    cases = [
        ("./model", "is also --model model, which it would overwrite"),
        ("model/sub", "lies inside --model model, which it would change"),
        (".", "holds --model model, which it would overwrite"),
        ("d.jsonl", f"is also --data {tmp_path / 'd.jsonl'}, which it would overwrite"),
    ]
    for out, message in cases:
        expected = f"--out {out}: {message}; choose another --out"
        with pytest.raises(MuscleError, match=f"^{re.escape(expected)}$"):
            check_out_apart(out, inputs)
    with pytest.raises(MuscleError, match="^--out r: would write d.jsonl over --data "):
        check_out_apart("r", inputs, writes=["r/compat.json", "d.jsonl"])
    check_out_apart("runs/a", inputs)  # beside the inputs
    check_out_apart(".", inputs, writes=["compat.json"])  # the folder holds inputs, no clash
    check_out_apart("out", {"--model": "org/name", "--data": ""})  # a hub id, nothing given
