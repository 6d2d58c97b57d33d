"""Write a tiny, seeded example for ``muscle compare``: per-instance results of an old model,
a new model (more accurate, with negative flips) and a compatibility candidate (fewer flips),
in the project's own per-instance format.

    python examples/make_example_predictions.py OUT_DIR [--n 120] [--seed 0]
    muscle compare OUT_DIR/old.jsonl OUT_DIR/new.jsonl OUT_DIR/compat.jsonl \\
        --name old --name new --name compat --slice-by category --out OUT_DIR/report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

CATEGORIES = ("arithmetic", "geometry", "word-problem")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_examples(out_dir: str | Path, n: int = 120, seed: int = 0) -> list[Path]:
    """Write ``old.jsonl``, ``new.jsonl`` and ``compat.jsonl`` into ``out_dir``."""
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        a, b = rnd.randint(2, 99), rnd.randint(2, 99)
        doc = {"question": f"What is {a} + {b}?", "answer": str(a + b)}
        docs.append((i, doc, CATEGORIES[i % len(CATEGORIES)]))
    # Per-instance skill: the old model is right on 55 %, the new one on 70 % but forgets
    # some old knowledge; the compatibility candidate keeps most of what the old model knew.
    old_ok = [rnd.random() < 0.55 for _ in range(n)]
    new_ok = [(rnd.random() < 0.80) if o else (rnd.random() < 0.55) for o in old_ok]
    compat_ok = [n_ or (o and rnd.random() < 0.75) for o, n_ in zip(old_ok, new_ok, strict=True)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, oks in (("old", old_ok), ("new", new_ok), ("compat", compat_ok)):
        wrong_shift = {"old": 1, "new": 2, "compat": 2}[name]
        rows = []
        for (i, doc, cat), ok in zip(docs, oks, strict=True):
            prompt = f"Question: {doc['question']}\nAnswer:"
            pred = doc["answer"] if ok else str(int(doc["answer"]) + wrong_shift * (1 + i % 2))
            rows.append(
                {
                    "id": str(i),
                    "doc_id": str(i),
                    "task": "toy-addition",
                    "task_version": "1.0",
                    "doc_hash": _sha(json.dumps(doc, sort_keys=True)),
                    "prompt_hash": _sha(prompt),
                    "target": doc["answer"],
                    "prediction": pred,
                    "correct": ok,
                    "category": cat,
                }
            )
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description="Write a tiny seeded example for muscle compare.")
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for p in make_examples(args.out_dir, args.n, args.seed):
        print(p)


if __name__ == "__main__":
    main()
