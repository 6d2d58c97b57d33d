"""The real-data benchmark's seeded splits: disjoint, deterministic, unchanged records that the
built-in tasks load, PIQA labels still aligned with their questions (cheap: no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muscle.tasks import get_task


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_real_data")


@pytest.mark.parametrize("task", ["sst2", "piqa", "gsm8k", "samsum", "hellaswag"])
def test_split_is_disjoint_seeded_and_loadable(bench, shared_data: Path, tmp_path: Path, task: str):
    size = bench.TaskSize(n_train=50, n_test=30, max_length=64)
    a = bench.make_split(task, shared_data, tmp_path / "a", size, seed=0)
    b = bench.make_split(task, shared_data, tmp_path / "b", size, seed=0)
    c = bench.make_split(task, shared_data, tmp_path / "c", size, seed=1)
    ext = "txt" if task == "hellaswag" else "jsonl"  # HellaSwag: 6-line text items
    for name in (f"train.{ext}", f"test.{ext}"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / f"train.{ext}").read_bytes() != (c / f"train.{ext}").read_bytes()
    t = get_task(task)
    train = t.load_docs(str(a), "train")
    test = t.load_docs(str(a), "test")
    assert (len(train), len(test)) == (50, 30)
    key = [k for k in train[0] if k not in ("_id", "label")]
    as_text = {json.dumps([d[k] for k in key]) for d in train}
    if task in ("sst2", "piqa", "hellaswag"):  # one labelled file split in two
        assert not as_text & {json.dumps([d[k] for k in key]) for d in test}


def test_piqa_labels_stay_aligned(bench, shared_data: Path, tmp_path: Path):
    out = bench.make_split("piqa", shared_data, tmp_path, bench.TaskSize(40, 20, 64), seed=3)
    original = get_task("piqa").load_docs(str(shared_data / "piqa"), "validation")
    gold = {(d["goal"], d["sol1"], d["sol2"]): d["label"] for d in original}
    for split in ("train", "test"):
        for d in get_task("piqa").load_docs(str(out), split):
            assert gold[(d["goal"], d["sol1"], d["sol2"])] == d["label"]


def test_hellaswag_items_are_read_as_in_the_validation_file(bench, shared_data, tmp_path):
    out = bench.make_split("hellaswag", shared_data, tmp_path, bench.TaskSize(40, 20, 64), seed=3)
    task = get_task("hellaswag")
    original = task.load_docs(str(shared_data / "hellaswag"), "validation")
    known = {(d["query"], tuple(d["choices"])): d["label"] for d in original}
    for split in ("train", "test"):
        for d in task.load_docs(str(out), split):
            assert known[(d["query"], tuple(d["choices"]))] == d["label"]
