"""Resume after a crash, multi-process sharding, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import muscle.evaluation.runner as runner
from _eval_tiny import one_thread, save_tiny  # noqa: F401
from muscle.cli import main
from muscle.evaluation import evaluate_model
from test_train_distributed import _free_port

REPO = Path(__file__).resolve().parents[1]
N_DOCS = 13


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def piqa_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("piqa")
    words = ["jar", "lid", "pot", "water", "bread", "cloth", "bike", "tyre", "tea"]
    with (d / "valid.jsonl").open("w") as fh:
        for i in range(N_DOCS):
            w = words[i % len(words)]
            fh.write(
                json.dumps(
                    {
                        "goal": f"How to use a {w}?" + " really" * (i % 4),
                        "sol1": f"Put the {w} in water.",
                        "sol2": f"Use the {w} {'a ' * i}bit.",
                    }
                )
                + "\n"
            )
    (d / "valid-labels.lst").write_text("\n".join(str(i % 2) for i in range(N_DOCS)) + "\n")
    return d


def assert_same_records(a: Path, b: Path) -> None:
    """Same records, in the same order; log-likelihoods within 1e-4 (thread counts and batch
    composition change float summation order), everything else exactly equal."""
    ra = [json.loads(x) for x in a.read_text().splitlines()]
    rb = [json.loads(x) for x in b.read_text().splitlines()]
    assert [r["id"] for r in ra] == [r["id"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x.pop("loglikelihoods") == pytest.approx(y.pop("loglikelihoods"), abs=1e-4)
        assert x == y


def _strip_volatile(s: dict) -> dict:
    return {
        k: v
        for k, v in s.items()
        if k
        not in (
            "seconds",
            "instances_per_second",
            "created",
            "n_evaluated",
            "n_resumed",
            "num_processes",
        )
    }


def test_resume_after_crash_equals_uninterrupted(tiny_dir, piqa_dir, tmp_path, monkeypatch):
    kw = dict(task="piqa", data=str(piqa_dir), batch_size=3, show_progress=False)
    full = evaluate_model(str(tiny_dir), out_path=tmp_path / "full.jsonl", **kw)

    real = runner._iter_batches
    seen: list[str] = []

    def crashing(*args, **kwargs):
        for k, batch in enumerate(real(*args, **kwargs)):
            if k == 2:
                raise KeyboardInterrupt("killed")
            seen.extend(r["id"] for r in batch)
            yield batch

    out = tmp_path / "run.jsonl"
    monkeypatch.setattr(runner, "_iter_batches", crashing)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(str(tiny_dir), out_path=out, **kw)
    assert not out.exists()  # nothing that looks complete
    partial = out.with_name("run.jsonl.partial")
    assert len(partial.read_text().splitlines()) == 6
    # simulate a line cut short by a kill mid-write
    with partial.open("a") as fh:
        fh.write('{"id": "12", "trunc')

    redone: list[str] = []

    def counting(*args, **kwargs):
        for batch in real(*args, **kwargs):
            redone.extend(r["id"] for r in batch)
            yield batch

    monkeypatch.setattr(runner, "_iter_batches", counting)
    res = evaluate_model(str(tiny_dir), out_path=out, resume=True, **kw)
    assert sorted(redone) == sorted(set(map(str, range(N_DOCS))) - set(seen))
    assert_same_records(out, tmp_path / "full.jsonl")
    assert res.summary["n_resumed"] == 6 and res.summary["n_evaluated"] == N_DOCS - 6
    s_full = json.loads((tmp_path / "full.jsonl.summary.json").read_text())
    s_res = json.loads((tmp_path / "run.jsonl.summary.json").read_text())
    assert _strip_volatile(s_full) == _strip_volatile(s_res) | {"model": s_full["model"]}
    assert not list(tmp_path.glob("run.jsonl.partial*"))
    assert full.summary["n"] == N_DOCS


def test_resume_refuses_other_model(tiny_dir, piqa_dir, tmp_path, monkeypatch):
    other = save_tiny(tmp_path / "other", seed=1)
    out = tmp_path / "r.jsonl"
    real = runner._iter_batches

    def crashing(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "_iter_batches", crashing)
    kw = dict(task="piqa", data=str(piqa_dir), batch_size=4, show_progress=False, out_path=out)
    with pytest.raises(RuntimeError):
        evaluate_model(str(tiny_dir), **kw)
    monkeypatch.setattr(runner, "_iter_batches", real)
    from muscle.errors import MuscleError

    with pytest.raises(MuscleError, match="different model"):
        evaluate_model(str(other), resume=True, **kw)


def test_resume_refuses_a_finished_file_of_another_model(tiny_dir, piqa_dir, tmp_path):
    """A finished output (no partials, no .resume.json) is reused by --resume only for the run
    that wrote it: its summary names the model."""
    from muscle.errors import MuscleError

    other = save_tiny(tmp_path / "other", seed=1)
    out = tmp_path / "f.jsonl"
    kw = dict(task="piqa", data=str(piqa_dir), batch_size=4, show_progress=False, out_path=out)
    first = evaluate_model(str(tiny_dir), **kw)
    assert not out.with_name("f.jsonl.resume.json").exists()
    again = evaluate_model(str(tiny_dir), resume=True, **kw)  # same run: nothing to redo
    assert again.summary["n_resumed"] == N_DOCS and again.records == first.records
    before = out.read_bytes()
    with pytest.raises(MuscleError, match="different model"):
        evaluate_model(str(other), resume=True, **kw)
    assert out.read_bytes() == before
    out.with_name("f.jsonl.summary.json").unlink()
    with pytest.raises(MuscleError, match="cannot tell which run"):
        evaluate_model(str(tiny_dir), resume=True, **kw)
    # a partial file without its .resume.json (copied in, or its record lost) is refused too
    out.rename(out.with_name("f.jsonl.partial"))
    with pytest.raises(MuscleError, match="cannot tell which run wrote the partial results"):
        evaluate_model(str(other), resume=True, **kw)


def test_cli_eval_and_errors(tiny_dir, piqa_dir, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    main(
        [
            "eval",
            "--model",
            str(tiny_dir),
            "--task",
            "piqa",
            "--data",
            str(piqa_dir),
            "--out",
            str(out),
            "--limit",
            "5",
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    assert len(out.read_text().splitlines()) == 5
    assert "piqa: acc =" in capsys.readouterr().out
    cases = [
        (["--task", "nope"], "unknown task 'nope'; available: "),
        (["--task", "piqa", "--data", str(tmp_path / "missing")], "missing: data file"),
        (["--task", "piqa", "--limit", "0"], "--limit must be >= 1"),
    ]
    for extra, msg in cases:
        with pytest.raises(SystemExit) as exc:
            main(["eval", "--model", str(tiny_dir), "--out", str(tmp_path / "e.jsonl"), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "e.jsonl").exists()


@pytest.mark.parametrize("layout", ["processes", pytest.param("machines", marks=pytest.mark.slow)])
def test_torchrun_two_processes_equal_one(tiny_dir, piqa_dir, tmp_path, layout):
    """Two processes on one machine, or (slow) on two "machines" — two torchrun launches with
    --nnodes 2, both local rank 0, sharing the output folder: the records of one process."""
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl"
    args = [
        "eval",
        "--model",
        str(tiny_dir),
        "--task",
        "piqa",
        "--data",
        str(piqa_dir),
        "--batch-size",
        "2",
        "--quiet",
    ]
    main([*args, "--out", str(one)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    torchrun = Path(sys.executable).with_name("torchrun")
    # a pid-derived port can be held by another run: a flaky failure
    port = str(_free_port())
    launch = ["--nproc_per_node", "2"] if layout == "processes" else ["--nproc_per_node", "1"]
    ranks = [None] if layout == "processes" else [0, 1]
    procs = [
        subprocess.Popen(
            [str(torchrun), *launch, "--master_port", port]
            + ([] if rank is None else ["--nnodes", "2", "--node_rank", str(rank)])
            + ([] if rank is None else ["--master_addr", "127.0.0.1"])
            + ["-m", "muscle", *args, "--out", str(two)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in ranks
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert_same_records(two, one)
    summary = json.loads(two.with_name("two.jsonl.summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["n"] == N_DOCS
    assert not list(tmp_path.glob("two.jsonl.partial*"))


CHILD = """
import pathlib, sys, time
import torch
import muscle.evaluation.runner as runner
from muscle.evaluation import evaluate_model

torch.set_num_threads(1)
real = runner._iter_batches

def stall(*args, **kwargs):
    for k, batch in enumerate(real(*args, **kwargs)):
        yield batch  # evaluate() appends and flushes it before asking for the next one
        if k == 1:
            pathlib.Path(sys.argv[4]).write_text("2 batches written")
            time.sleep(600)  # wait to be killed

runner._iter_batches = stall
evaluate_model(sys.argv[1], task="piqa", data=sys.argv[2], out_path=sys.argv[3], batch_size=3,
               show_progress=False)
"""


def test_resume_after_sigkill(tiny_dir, piqa_dir, tmp_path):
    import signal
    import time

    kw = dict(task="piqa", data=str(piqa_dir), batch_size=3, show_progress=False)
    evaluate_model(str(tiny_dir), out_path=tmp_path / "full.jsonl", **kw)
    out, ready = tmp_path / "killed.jsonl", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tiny_dir), str(piqa_dir), str(out), str(ready)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "child never reached the kill point"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)  # no cleanup, no finally blocks
    finally:
        child.wait(timeout=60)
        child.stderr.close()
    assert not out.exists()
    assert len(out.with_name("killed.jsonl.partial").read_text().splitlines()) == 6
    res = evaluate_model(str(tiny_dir), out_path=out, resume=True, **kw)
    assert res.summary["n_resumed"] == 6 and res.summary["n_evaluated"] == N_DOCS - 6
    assert_same_records(out, tmp_path / "full.jsonl")


def test_each_process_evaluates_on_its_own_gpu(tiny_dir, piqa_dir, monkeypatch):
    """Under torchrun on GPUs, ``--device cuda`` (like ``auto``) means this rank's GPU: a bare
    "cuda" put every rank's model on GPU 0. (No GPU here: the process state is stubbed.)"""
    from types import SimpleNamespace

    import torch

    import muscle.evaluation.runner as runner
    import muscle.models

    seen = []

    def fake_load(base, adapter, *, device, **kw):
        seen.append(device)
        raise RuntimeError("stop here")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(
        runner, "process_state", lambda device: SimpleNamespace(device=torch.device("cuda:1"))
    )
    monkeypatch.setattr(muscle.models, "load_model", fake_load)
    for device in ("cuda", "auto", "cpu"):
        with pytest.raises(RuntimeError, match="stop here"):
            evaluate_model(str(tiny_dir), task="piqa", data=str(piqa_dir), device=device)
    assert seen == ["cuda:1", "cuda:1", "cpu"]


def test_out_may_not_be_an_input(tiny_dir, piqa_dir, tmp_path, monkeypatch, capsys):
    """--out (or its summary) on the data, the task spec, a spec's data file, or inside the
    model: one line, and the input is left as it was."""
    monkeypatch.chdir(tmp_path)
    rows = [{"q": f"q{i}", "choices": ["a", "b"], "l": i % 2} for i in range(4)]
    (tmp_path / "qa2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ok2.yaml").write_text(
        "name: ok2\noutput_type: multiple_choice\ndata_files: {test: qa2.jsonl}\n"
        "prompt: '{q}'\nchoices_field: choices\nlabel_field: l\n"
    )
    (tmp_path / "d.jsonl").write_bytes((piqa_dir / "valid.jsonl").read_bytes())
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    spec = ["--task", "ok2.yaml"]
    cases = [
        ([*spec, "--out", "qa2.jsonl"], "is also --task's test data file"),
        ([*spec, "--out", "ok2.yaml"], "ok2.yaml: is also --task "),
        (["--task", "piqa", "--data", "d.jsonl", "--out", "./d.jsonl"], "is also --data d.jsonl"),
        ([*spec, "--out", "qa2"], None),  # writes qa2.summary.json etc.: no clash
        ([*spec, "--out", "q.jsonl", "--data", "q.jsonl.summary.json"], "would write q.jsonl.s"),
        ([*spec, "--out", str(tiny_dir / "r.jsonl")], "lies inside --model"),
    ]
    (tmp_path / "q.jsonl.summary.json").write_bytes(before[tmp_path / "qa2.jsonl"])
    for extra, message in cases:
        if message is None:
            main(["eval", "--model", str(tiny_dir), *extra, "--quiet"])
            continue
        with pytest.raises(SystemExit) as exc:
            main(["eval", "--model", str(tiny_dir), *extra, "--quiet"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "choose another --out" in err and err.count("\n") == 1, err
    assert all(p.read_bytes() == b for p, b in before.items())
    assert not (tiny_dir / "r.jsonl").exists()


def test_glob_characters_in_out_name_resume_and_keep_other_runs(
    tiny_dir, piqa_dir, tmp_path, monkeypatch
):
    """An --out name with [, *, ? is matched as it is: r[6].jsonl resumes from its own partial
    file (no record twice), and a fresh v*.jsonl leaves v1.jsonl's partial file alone."""
    kw = dict(task="piqa", data=str(piqa_dir), batch_size=3, show_progress=False)
    real = runner._iter_batches

    def crashing(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(runner, "_iter_batches", crashing)
    out = tmp_path / "r[6].jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(str(tiny_dir), out_path=out, **kw)
    monkeypatch.setattr(runner, "_iter_batches", real)
    res = evaluate_model(str(tiny_dir), out_path=out, resume=True, **kw)
    assert res.summary["n_resumed"] == 3 and res.summary["n_evaluated"] == N_DOCS - 3
    assert len(out.read_text().splitlines()) == N_DOCS
    assert not (tmp_path / "r[6].jsonl.partial").exists()

    other = tmp_path / "v1.jsonl.partial"
    other.write_text('{"id": "0"}\n')
    evaluate_model(str(tiny_dir), out_path=tmp_path / "v*.jsonl", limit=2, **kw)
    assert other.read_text() == '{"id": "0"}\n'


def test_a_fresh_run_removes_the_earlier_results_first(tiny_dir, piqa_dir, tmp_path, monkeypatch):
    """A fresh run killed midway leaves no earlier run's records or summary beside its partial
    file (they would pass for its own)."""
    other = save_tiny(tmp_path / "other", seed=1)
    out = tmp_path / "st.jsonl"
    kw = dict(task="piqa", data=str(piqa_dir), batch_size=4, show_progress=False, out_path=out)
    evaluate_model(str(tiny_dir), **kw)
    assert out.is_file() and out.with_name("st.jsonl.summary.json").is_file()
    real = runner._iter_batches

    def crashing(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(runner, "_iter_batches", crashing)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(str(other), **kw)
    assert not out.exists() and not out.with_name("st.jsonl.summary.json").exists()
    assert out.with_name("st.jsonl.partial").is_file()
