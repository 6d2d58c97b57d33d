"""Step time and peak memory of a MUSCLE compatibility step relative to a plain LoRA step.

Runs the real training path (``train_compat_adapter``) on a tiny random Llama pair, one
variant per subprocess (so peak memory is per variant):

- ``plain``: ``--mask none``, continuing A2 with cross-entropy (a plain LoRA step)
- ``live``: ``--mask student-wrong``, both teachers live (v1 model + the v2 teacher adapter on
  the shared v2 base)
- ``cached``: ``--mask student-wrong --cache-teachers`` (top-k from disk; v1 not in memory)

Prints the median optimizer-step time of each (CPU: process CPU time, so use ``--threads 1``;
CUDA: wall time) (goals: live <= 1.5x plain, cached <= 1.15x
plain), peak memory (CUDA: max allocated; CPU: peak RSS) and how many copies of a base model's
weights were resident while training (goal: 1 with the cache, 2 live: v1 and v2, never a
second v2).

    python benchmarks/bench_train_step.py                       # CPU, tiny
    python benchmarks/bench_train_step.py --device cuda --hidden 1024 --layers 8 --vocab 32000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def build(root: Path, args: argparse.Namespace) -> dict[str, str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"])}
    for i in range(args.vocab - len(vocab)):
        vocab[f"t{i}"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    paths = {}
    for name, seed in (("b1", 0), ("b2", 1)):
        cfg = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=args.hidden * 8 // 3,
            num_hidden_layers=args.layers,
            num_attention_heads=max(args.hidden // 64, 1),
            num_key_value_heads=max(args.hidden // 64, 1),
            max_position_embeddings=args.seq_len + 8,
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        LlamaForCausalLM(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths[name] = str(root / name)
        torch.manual_seed(seed + 10)
        lora = LoraConfig(
            r=args.rank,
            lora_alpha=2 * args.rank,
            target_modules="all-linear",
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        )
        get_peft_model(LlamaForCausalLM.from_pretrained(root / name), lora).save_pretrained(
            root / f"a{name[1]}"
        )
        paths[f"a{name[1]}"] = str(root / f"a{name[1]}")
    return paths


def run_variant(variant: str, root: Path, paths: dict[str, str], args: argparse.Namespace) -> dict:
    import torch
    from transformers import TrainerCallback

    from muscle.tasks.base import Task
    from muscle.training import CompatTrainingConfig, train_compat_adapter

    torch.set_num_threads(args.threads)
    n_words = args.seq_len - 2 - args.answer_words
    rng = random.Random(0)
    docs = [
        {
            "_id": str(i),
            "q": " ".join(f"t{rng.randrange(args.vocab - 4)}" for _ in range(n_words)),
            "a": " ".join(f"t{rng.randrange(args.vocab - 4)}" for _ in range(args.answer_words)),
        }
        for i in range(args.batch_size * (args.steps + 2))
    ]

    class Synthetic(Task):
        name = "bench"
        output_type = "generate_until"

        def load_docs(self, data: str | None = None, split: str | None = None) -> list:
            return docs

        def doc_to_text(self, doc: dict) -> str:
            return doc["q"]

        def doc_to_target(self, doc: dict) -> str:
            return doc["a"]

    times: list[float] = []
    dev = args.device
    # CPU: process CPU time (robust to other load on a shared machine; use --threads 1);
    # CUDA: wall time after synchronising.
    clock = time.perf_counter if dev == "cuda" else time.process_time

    class Timer(TrainerCallback):
        def on_step_begin(self, a: Any, s: Any, c: Any, **kw: Any) -> None:
            if dev == "cuda":
                torch.cuda.synchronize()
            self.t = clock()

        def on_step_end(self, a: Any, s: Any, c: Any, **kw: Any) -> None:
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(clock() - self.t)

    resident: dict[str, float] = {}

    class Resident(TrainerCallback):
        """Count distinct base-weight bytes reachable from the trainer's models."""

        def on_step_end(self, a: Any, s: Any, c: Any, **kw: Any) -> None:
            if resident:
                return
            import gc

            seen: set[int] = set()
            total = 0
            for obj in gc.get_objects():
                # frozen parameters: the base weights (and the small frozen teacher adapter)
                if isinstance(obj, torch.nn.Parameter) and not obj.requires_grad:
                    ptr = obj.data_ptr()
                    if ptr not in seen and obj.numel() > 0:
                        seen.add(ptr)
                        total += obj.numel() * obj.element_size()
            resident["param_bytes"] = total

    mask = "none" if variant == "plain" else "student-wrong"
    cfg = CompatTrainingConfig(
        old_model=paths["b1"],
        old_adapter=paths["a1"],
        new_model=paths["b2"],
        new_adapter=paths["a2"],
        task=Synthetic(),
        output_dir=str(root / f"out-{variant}"),
        mask=mask,
        cache_teachers=variant == "cached",
        top_k=args.top_k,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        val_fraction=0.0,
        save_steps=10**6,
        logging_steps=10**6,
        device=dev,
        dtype=args.dtype,
        teacher_dtype=args.teacher_dtype,
        show_progress=False,
        max_length=args.seq_len,
        loss_on=args.loss_on,
    )
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res = train_compat_adapter(cfg, callbacks=[Timer(), Resident()])
    steady = times[args.warmup :] or times
    import numpy as np

    base_bytes = sum(
        f.stat().st_size for f in Path(paths["b2"]).glob("*.safetensors")
    )  # float32 on disk
    dtype_scale = {"float32": 1.0, "bfloat16": 0.5, "float16": 0.5}.get(args.dtype, 1.0)
    out = {
        "variant": variant,
        "step_ms_median": 1000 * statistics.median(steady),
        "step_ms_p90": 1000 * float(np.percentile(steady, 90)),
        "steps_timed": len(steady),
        "base_copies_resident": round(
            resident.get("param_bytes", 0) / (base_bytes * dtype_scale), 2
        ),
        "cache_seconds": (res.get("teacher_cache") or {}).get("seconds"),
    }
    if dev == "cuda":
        out["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--teacher-dtype", default=None, help="Teachers' precision (default: --dtype).")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument(
        "--seq-len", type=int, default=128, help="Tokens per example (BOS, prompt, answer, EOS)."
    )
    p.add_argument("--answer-words", type=int, default=1, help="Answer tokens per example.")
    p.add_argument("--loss-on", default="all", choices=["all", "answer"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3, help="Steps not timed.")
    p.add_argument("--threads", type=int, default=max(os.cpu_count() or 1, 1))
    p.add_argument("--variants", default="plain,live,cached")
    p.add_argument("--json", default=None, help="Also write the figures to this file.")
    p.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._variant:
        root = Path(args._root)
        paths = json.loads((root / "paths.json").read_text())
        print("RESULT " + json.dumps(run_variant(args._variant, root, paths, args)), flush=True)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = build(root, args)
        (root / "paths.json").write_text(json.dumps(paths))
        results = {}
        passthrough, skip = [], False
        for a in sys.argv[1:]:
            if skip or a.startswith("--json"):
                skip = a == "--json"
                continue
            passthrough.append(a)
        for v in args.variants.split(","):
            cmd = [sys.executable, __file__, *passthrough, "--_variant", v, "--_root", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"variant {v} failed:\n{proc.stderr[-3000:]}")
            results[v] = json.loads(line[0][7:])
    plain = results.get("plain", {}).get("step_ms_median")
    mem_key = "peak_mem_mib" if args.device == "cuda" else "peak_rss_mib"
    print(
        f"device={args.device} dtype={args.dtype} teacher_dtype={args.teacher_dtype or args.dtype} "
        f"hidden={args.hidden} layers={args.layers} "
        f"vocab={args.vocab} batch={args.batch_size}x{args.seq_len} lora_r={args.rank} "
        f"loss_on={args.loss_on} answer={args.answer_words} "
        f"top_k={args.top_k} threads={args.threads}"
    )
    print(f"{'variant':<8} {'step ms':>9} {'x plain':>8} {mem_key:>13} {'base copies':>12}")
    for v, r in results.items():
        ratio = r["step_ms_median"] / plain if plain else float("nan")
        print(
            f"{v:<8} {r['step_ms_median']:9.1f} {ratio:8.2f} {r[mem_key]:13.1f} "
            f"{r['base_copies_resident']:12.2f}"
        )
        r["x_plain"] = ratio
    if args.json:
        shown = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "json"}
        Path(args.json).write_text(json.dumps({"args": shown, "results": results}, indent=2))


if __name__ == "__main__":
    main()
