"""Adapters (PEFT LoRA) in ``muscle eval``: equal to the merged model; wrong base -> one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _eval_tiny import build_tokenizer, one_thread, save_tiny  # noqa: F401
from muscle.cli import main
from test_eval_resume import assert_same_records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    base = save_tiny(root / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B so the adapter changes the outputs
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft.save_pretrained(root / "lora")
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), root / "lora"
    ).merge_and_unload()
    merged.save_pretrained(root / "merged")
    build_tokenizer().save_pretrained(root / "merged")
    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(root / "other")
    tok.save_pretrained(root / "other")
    data = root / "piqa"
    data.mkdir()
    rows = [
        {"goal": f"How to fix a {w}?", "sol1": f"Glue the {w}.", "sol2": f"Bin the {w} now."}
        for w in ["jar", "bike", "pot", "lid", "tyre", "pan"]
    ]
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "valid-labels.lst").write_text("0\n1\n0\n1\n0\n1\n")
    return root, data


def run(root: Path, data: Path, out: Path, *extra: str) -> None:
    main(
        [
            "eval",
            "--task",
            "piqa",
            "--data",
            str(data),
            "--out",
            str(out),
            "--quiet",
            "--batch-size",
            "4",
            *extra,
        ]
    )


def test_adapter_equals_merged_model(setup, tmp_path):
    root, data = setup
    run(
        root,
        data,
        tmp_path / "a.jsonl",
        "--model",
        str(root / "base"),
        "--adapter",
        str(root / "lora"),
    )
    run(root, data, tmp_path / "m.jsonl", "--model", str(root / "merged"))
    run(root, data, tmp_path / "b.jsonl", "--model", str(root / "base"))
    assert_same_records(tmp_path / "a.jsonl", tmp_path / "m.jsonl")
    a = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    diff = max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    assert diff > 1e-2  # the adapter really changed the model
    s = json.loads((tmp_path / "a.jsonl.summary.json").read_text())["model"]
    assert s["adapter"] == str((root / "lora").resolve()) and len(s["adapter_sha256"]) == 64
    assert len(s["base_sha256"]) == 64


def test_adapter_on_wrong_base_is_one_line(setup, tmp_path, capsys):
    root, data = setup
    with pytest.raises(SystemExit) as exc:
        run(
            root,
            data,
            tmp_path / "x.jsonl",
            "--model",
            str(root / "other"),
            "--adapter",
            str(root / "lora"),
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "adapter does not match base model" in err and "size mismatch" in err
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(SystemExit):
        run(
            root,
            data,
            tmp_path / "x.jsonl",
            "--model",
            str(root / "base"),
            "--adapter",
            str(root / "nope"),
        )
    assert "not a PEFT adapter folder" in capsys.readouterr().err


def test_loading_an_adapter_prints_no_peft_internals(setup):
    """PEFT reads an attribute transformers 5 deprecates: that FutureWarning is not the user's."""
    import warnings

    from transformers import AutoModelForCausalLM

    from muscle.models import attach_adapter

    root = setup[0]
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        model = attach_adapter(base, str(root / "lora"))
    assert type(model).__name__.startswith("Peft")
    assert not [w for w in got if "is_gradient_checkpointing" in str(w.message)]
