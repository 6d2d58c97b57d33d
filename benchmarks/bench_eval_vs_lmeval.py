"""Benchmark ``muscle eval`` against lm-evaluation-harness on the same model, the same local
task file (PIQA by default, or HellaSwag, SST-2) and the same batch size: instances/second of
both and per-instance agreement.

    .venv/bin/python benchmarks/bench_eval_vs_lmeval.py [--task piqa|hellaswag|sst2]
        [--model DIR] [--data DIR]
        [--limit 100] [--batch-size 16] [--lmeval-python benchmarks/.venv-lmeval/bin/python]

lm-eval runs in its own virtual environment (``benchmarks/.venv-lmeval``, git-ignored; create
it with ``python -m venv benchmarks/.venv-lmeval && benchmarks/.venv-lmeval/bin/pip install
lm-eval``; to share this project's torch and transformers instead of downloading them again,
first write the path of ``.venv``'s site-packages into
``benchmarks/.venv-lmeval/lib/pythonX.Y/site-packages/_main_venv.pth``), through a subprocess,
over a custom task YAML that reads the same items.  Only the
evaluation is timed on both sides (model loading excluded), in float32 on CPU, as wall seconds
and as process CPU seconds (the robust figure on a shared machine).  Without that
venv the script says so and reports muscle's figures alone.

Goals (issue 3): at least lm-eval's instances/second and >= 99 % per-instance agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = Path.home() / ".cache" / "muscle" / "smollm2-hf"

LMEVAL_RUNNER = r"""
import json, sys, time
import torch
from lm_eval import evaluator
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager, get_task_dict

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
lm = HFLM(pretrained=a["model"], batch_size=a["batch_size"], device="cpu", dtype="float32")
task_dict = get_task_dict([a["task"]], TaskManager(include_path=a["include"]))
t0, c0 = time.perf_counter(), time.process_time()
res = evaluator.evaluate(lm=lm, task_dict=task_dict, log_samples=True, bootstrap_iters=0)
sec, cpu = time.perf_counter() - t0, time.process_time() - c0
samples = sorted(res["samples"][a["task"]], key=lambda s: s["doc_id"])
out = [{"doc_id": s["doc_id"], "lls": [float(r[0]) for r in s["filtered_resps"]],
        "acc": float(s["acc"]), "acc_norm": float(s["acc_norm"])} for s in samples]
json.dump({"seconds": sec, "cpu_seconds": cpu, "samples": out}, open(a["out"], "w"))
"""

TASK_YAML = """task: muscle_bench_{task}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{query}}}}"
doc_to_target: label
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def run_muscle(model_dir: str, task: str, docs: list, batch_size: int, threads: int) -> dict:
    import torch

    from muscle.evaluation import evaluate
    from muscle.models import load_model
    from muscle.tasks import get_task

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir, dtype="float32", device="cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(model, tok, get_task(task), docs, batch_size=batch_size, show_progress=False)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "records": res.records,
    }


def run_lmeval(
    py: Path, model_dir: str, task: str, docs: list, batch_size: int, threads: int, work: Path
) -> dict:
    """lm-eval over the same docs: each written with muscle's prompt text and choices (the
    prompts equal lm-eval's own task YAMLs for piqa and hellaswag)."""
    from muscle.tasks import get_task

    t = get_task(task)
    merged = work / "merged.jsonl"
    with merged.open("w") as fh:
        for d in docs:
            row = {"query": t.doc_to_text(d), "choices": t.doc_to_choices(d)}
            fh.write(json.dumps(row | {"label": t.gold_index(d)}) + "\n")
    (work / "tasks").mkdir(exist_ok=True)
    (work / "tasks" / "bench.yaml").write_text(TASK_YAML.format(task=task, data=merged))
    out = work / "lmeval.json"
    args = {
        "model": model_dir,
        "batch_size": batch_size,
        "task": f"muscle_bench_{task}",
        "include": str(work / "tasks"),
        "out": str(out),
        "threads": threads,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(py), "-c", LMEVAL_RUNNER, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"lm-eval failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="local HF model folder")
    ap.add_argument("--task", default="piqa", choices=["piqa", "hellaswag", "sst2"])
    ap.add_argument("--data", default=None, help="default: ../shared/data/TASK")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    ap.add_argument("--lmeval-python", default=str(REPO / "benchmarks/.venv-lmeval/bin/python"))
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/bench_eval_vs_lmeval.json"))
    a = ap.parse_args()
    if not Path(a.model, "config.json").is_file():
        raise SystemExit(
            f"{a.model}: no HF model folder (convert the SmolLM2 GGUF once with save_pretrained, "
            "see the README section 'muscle eval')"
        )
    from muscle.tasks import get_task

    data = a.data or str(REPO.parent / "shared" / "data" / a.task)
    docs = get_task(a.task).load_docs(data)[: a.limit]
    n = len(docs)
    mus = run_muscle(a.model, a.task, docs, a.batch_size, a.threads)
    report: dict = {
        "task": a.task,
        "n": n,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "model": a.model,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "muscle": {
            "seconds": round(mus["seconds"], 2),
            "cpu_seconds": round(mus["cpu_seconds"], 2),
            "instances_per_second": round(n / mus["seconds"], 3),
            "acc": sum(r["acc"] for r in mus["records"]) / n,
            "acc_norm": sum(r["acc_norm"] for r in mus["records"]) / n,
        },
    }
    py = Path(a.lmeval_python)
    if not py.is_file():
        print(f"lm-eval not installed at {py}: reporting muscle only")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            lme = run_lmeval(py, a.model, a.task, docs, a.batch_size, a.threads, Path(tmp))
        ls = lme["samples"]
        assert len(ls) == n, (len(ls), n)
        agree = sum(
            (r["prediction"] == max(range(len(s["lls"])), key=lambda i, s=s: s["lls"][i]))
            for r, s in zip(mus["records"], ls, strict=True)
        )
        agree_norm = sum(
            float(r["acc_norm"]) == s["acc_norm"] for r, s in zip(mus["records"], ls, strict=True)
        )
        max_diff = max(
            abs(x - y)
            for r, s in zip(mus["records"], ls, strict=True)
            for x, y in zip(r["loglikelihoods"], s["lls"], strict=True)
        )
        report["lm_eval"] = {
            "seconds": round(lme["seconds"], 2),
            "cpu_seconds": round(lme["cpu_seconds"], 2),
            "instances_per_second": round(n / lme["seconds"], 3),
            "acc": sum(s["acc"] for s in ls) / n,
            "acc_norm": sum(s["acc_norm"] for s in ls) / n,
        }
        report["agreement_acc_prediction"] = agree / n
        report["agreement_acc_norm_correct"] = agree_norm / n
        report["max_abs_loglikelihood_diff"] = max_diff
        report["speedup_wall"] = round(lme["seconds"] / mus["seconds"], 3)
        report["speedup_cpu"] = round(lme["cpu_seconds"] / mus["cpu_seconds"], 3)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
