"""Benchmark ``muscle compare`` on two generic JSONL files of N instances each (default
1,000,000), as a subprocess: wall seconds and peak resident memory of the child.

    .venv/bin/python benchmarks/bench_compare.py [--n 1000000] [--candidates 0] [--keep DIR]

Goals (issue 2): under 30 s and under 2 GB peak memory for 1,000,000 instances per file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_inputs(folder: Path, n: int, n_files: int, seed: int = 0) -> list[Path]:
    """Generic JSONL: ``{"id", "correct", "prediction", "subject"}``; the new model is 5 points
    more accurate with about 4 % negative flips; files are written with numpy-built lines."""
    rng = np.random.default_rng(seed)
    base = rng.random(n) < 0.6
    paths = []
    subjects = np.array(["math", "law", "biology", "history", "physics"])
    subj = subjects[rng.integers(0, len(subjects), n)]
    for k in range(n_files):
        flip_down = rng.random(n) < 0.04
        flip_up = rng.random(n) < (0.04 + 0.05 * k)
        correct = np.where(base, ~flip_down, flip_up)
        wrong_pred = rng.integers(0, 4, n)
        path = folder / f"model{k}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            chunk = 100_000
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                lines = [
                    f'{{"id": "q{i}", "correct": {"true" if c else "false"}, '
                    f'"prediction": "{"A" if c else "W" + str(w)}", "subject": "{sj}"}}\n'
                    for i, c, w, sj in zip(
                        range(s, e),
                        correct[s:e].tolist(),
                        wrong_pred[s:e].tolist(),
                        subj[s:e].tolist(),
                        strict=True,
                    )
                ]
                fh.writelines(lines)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--candidates", type=int, default=0)
    ap.add_argument("--slice-by", default=None, help="e.g. subject")
    ap.add_argument("--keep", default=None, help="write inputs/outputs here instead of a temp dir")
    args = ap.parse_args()
    ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    folder = Path(args.keep or ctx.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_inputs(folder, args.n, 2 + args.candidates)
    gen_s = time.perf_counter() - t0
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    cmd = [
        sys.executable,
        "-m",
        "muscle",
        "compare",
        *map(str, paths),
        "--out",
        str(folder / "out"),
    ]
    if args.slice_by:
        cmd += ["--slice-by", args.slice_by]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = usage.ru_maxrss  # KiB on Linux
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit(f"muscle compare failed with exit code {proc.returncode}")
    compat = json.loads((folder / "out" / "compat.json").read_text())
    flips_mb = (folder / "out" / "flips.jsonl").stat().st_size / 1e6
    result = {
        "n_per_file": args.n,
        "files": len(paths),
        "input_mb": round(size_mb, 1),
        "flips_jsonl_mb": round(flips_mb, 1),
        "generate_inputs_s": round(gen_s, 2),
        "compare_wall_s": round(wall, 2),
        "compare_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "compare_peak_rss_mb": round(peak_kb / 1024, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "nfr": compat["pairs"][0]["nfr"],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "goal": "wall < 30 s, peak RSS < 2048 MB",
        "meets_goal": wall < 30 and peak_kb / 1024 < 2048,
    }
    print(json.dumps(result, indent=2))
    if ctx is not None:
        ctx.cleanup()


if __name__ == "__main__":
    main()
