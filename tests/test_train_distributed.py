"""Two CPU processes (torchrun, gloo) give the same losses as one with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_train_toys import ToyTask, make_model, make_random_adapter

TORCHRUN = Path(sys.executable).with_name("torchrun")


def _spec(folder: Path) -> Path:
    task = ToyTask(24, seed=1)  # 20 train + 4 val docs: the same batches on 1 and 2 processes
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "train.jsonl").open("w") as fh:
        for d in task.docs:
            fh.write(json.dumps({"id": d["_id"], "a": d["a"], "b": d["b"], "label": d["label"]}))
            fh.write("\n")
    spec = folder / "toy.yaml"
    spec.write_text(
        "name: toy-pairs\noutput_type: multiple_choice\n"
        "data_files: {train: train.jsonl}\ndefault_split: train\n"
        'prompt: "Question: {a} {b}?\\nAnswer:"\nid_field: id\n'
        "choices: [no, yes]\nlabel_field: label\nmetric: acc\n"
    )
    return spec


def _free_port() -> int:
    """A port nobody listens on now (a fixed one can still be held by the previous run)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_training_barriers_span_both_cpu_processes(tmp_path: Path) -> None:
    """The process state behind the training code's barriers is MULTI_CPU under torchrun, so
    the other process waits while the main one builds the teacher cache. (A bare
    ``PartialState()`` saw one process in each, both built the cache at once, and 3 of 18 runs
    crashed reading a folder the other was replacing.)"""
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            import json, sys, time
            from pathlib import Path
            from muscle.distributed import process_state

            state = process_state("cpu")
            marker = Path(sys.argv[1])
            with state.main_process_first():
                if state.is_main_process:
                    time.sleep(0.5)  # the cache being built
                    marker.write_text("built")
                seen = marker.is_file()
            # one file per rank: two processes printing to one pipe can interleave their lines
            Path(sys.argv[2], f"rank{state.process_index}.json").write_text(json.dumps(
                {"rank": state.process_index, "n": state.num_processes,
                 "type": str(state.distributed_type), "seen": seen}))
            """
        )
    )
    run = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port()),
         str(probe), str(tmp_path / "built"), str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in lines) == [0, 1]
    assert all(r["n"] == 2 and r["type"].endswith("MULTI_CPU") and r["seen"] for r in lines)


def _runs_match(r1: dict, r2: dict) -> None:
    """Same global batch, so the same steps: losses, gradient norms, validation figures."""
    assert r1["world_size"] == 1 and r2["world_size"] == 2
    assert r1["total_steps"] == r2["total_steps"] > 0
    s1 = [h for h in r1["log_history"] if "loss" in h and "eval_loss" not in h]
    s2 = [h for h in r2["log_history"] if "loss" in h and "eval_loss" not in h]
    assert len(s1) == len(s2) == r1["total_steps"]
    for a, b in zip(s1, s2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3, abs=1e-6)
    for ea, eb in zip(r1["epochs"], r2["epochs"], strict=True):
        assert eb["val_loss"] == pytest.approx(ea["val_loss"], rel=1e-4)
        # the terms behind best-epoch selection are averaged over the ranks, not rank 0's
        assert eb["val_ce"] == pytest.approx(ea["val_ce"], rel=1e-4)
        assert eb["val_aligned_v1"] == pytest.approx(ea["val_aligned_v1"], abs=1e-6)
    assert r1["best_epoch"] == r2["best_epoch"]


def _compat_args(tmp_path: Path, cache: bool) -> list[str]:
    b1 = make_model(tmp_path / "b1", seed=0)
    b2 = make_model(tmp_path / "b2", seed=1)
    a1 = make_random_adapter(b1, tmp_path / "a1", seed=10)
    a2 = make_random_adapter(b2, tmp_path / "a2", seed=20)
    spec = _spec(tmp_path / "task")
    return [
        "-m", "muscle", "train", "compat",
        "--old-model", str(b1), "--old-adapter", str(a1),
        "--new-model", str(b2), "--new-adapter", str(a2),
        "--task", str(spec), "--device", "cpu", "--no-progress",
        "--epochs", "2", "--grad-accum", "2", "--learning-rate", "1e-2",
        "--logging-steps", "1", "--seed", "5", "--val-fraction", "0.1667",
    ] + (["--cache-teachers", "--top-k", "8"] if cache else [])  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_process(tmp_path: Path, args: list[str]) -> dict:
    one = subprocess.run(
        [sys.executable, *args, "--batch-size", "4", "--out", str(tmp_path / "one")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    return json.loads((tmp_path / "one" / "training.json").read_text())


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
@pytest.mark.parametrize("cache", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_processes_match_one(tmp_path: Path, cache: bool) -> None:
    """Live teachers (adapter switching under DDP); slow variant: the teacher cache, built by
    the main process while the other waits."""
    args = _compat_args(tmp_path, cache)
    r1 = _one_process(tmp_path, args)
    two = subprocess.run(
        [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(_free_port()), *args,
         "--batch-size", "2", "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    r2 = json.loads((tmp_path / "two" / "training.json").read_text())
    if cache:
        assert r1["teacher_cache"]["top_k"] == r2["teacher_cache"]["top_k"] == 8
    _runs_match(r1, r2)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_two_machines_match_one(tmp_path: Path) -> None:
    """Two "machines" (two torchrun launches, --nnodes 2, one process each: both are local
    rank 0) sharing the output folder, with the teacher cache: the global main process alone
    builds the cache and writes the outputs, and the run equals one process's."""
    args = _compat_args(tmp_path, cache=True)
    r1 = _one_process(tmp_path, args)
    port = str(_free_port())
    launches = [
        subprocess.Popen(
            [
                str(TORCHRUN),
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                *args,
                "--batch-size",
                "2",
                "--out",
                str(tmp_path / "two"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for proc in launches:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    r2 = json.loads((tmp_path / "two" / "training.json").read_text())
    assert r2["teacher_cache"]["top_k"] == 8
    _runs_match(r1, r2)
