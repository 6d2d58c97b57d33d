"""The scenario's shared tokenizer and its two base models, pre-trained from scratch.

A byte-level BPE tokenizer is trained with ``tokenizers`` on both corpora and wrapped in
``PreTrainedTokenizerFast``; two Llama models (``LlamaForCausalLM``) are pre-trained on packed
blocks of their corpus with AdamW and a cosine schedule.  v1 is smaller and sees part of the
facts; v2 is larger, trained longer, and sees a different, larger part of them: a real
base-model update.  Both are saved as Hugging Face folders (safetensors).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from muscle.errors import MuscleError

EOS = "<|endoftext|>"
PAD = "<pad>"
_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


@dataclass(frozen=True)
class BaseRecipe:
    """Architecture and pre-training schedule of one base model."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 192
    steps: int = 400
    batch_size: int = 32
    block_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 40
    weight_decay: float = 0.01
    # "v1": start from base v1's weights (continued pre-training, as Phi 1 -> 1.5) instead of
    # from scratch; the architecture fields must then equal v1's.
    init_from: str | None = None


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``; save and return it (eos/pad set)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=512
    )
    fast.padding_side = "right"
    fast.save_pretrained(out_dir)
    return fast


class _Packer:
    """Documents re-shuffled and packed into fresh blocks every epoch, so the model must learn
    the facts themselves, not the order of a fixed packing."""

    def __init__(self, texts: list[str], tokenizer: Any, block: int, seed: int) -> None:
        import torch

        eos = tokenizer.eos_token_id
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
        self.docs = [[*ids, eos] for ids in enc]
        self.block = block
        self.gen = torch.Generator().manual_seed(seed)
        self.tokens = sum(len(d) for d in self.docs)

    def epoch(self) -> Any:
        import torch

        order = torch.randperm(len(self.docs), generator=self.gen).tolist()
        ids = [t for i in order for t in self.docs[i]]
        n = len(ids) // self.block
        blocks = torch.tensor(ids[: n * self.block], dtype=torch.long).view(n, self.block)
        return blocks[torch.randperm(n, generator=self.gen)]


def pretrain_base(
    texts: list[str],
    tokenizer: Any,
    recipe: BaseRecipe,
    out_dir: Path,
    *,
    seed: int,
    init_dir: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Pre-train a Llama model on ``texts`` — from scratch, or continued from the model in
    ``init_dir`` (whose architecture must be the recipe's); save it; return its log."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=max(256, recipe.block_size),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if init_dir is None:
        model = LlamaForCausalLM(config)
    else:
        model = LlamaForCausalLM.from_pretrained(init_dir)
        have = model.config.to_dict()
        diff = [k for k, v in config.to_dict().items() if k in _ARCH_KEYS and have.get(k) != v]
        if diff:
            raise MuscleError(
                f"cannot continue pre-training from {init_dir}: its {', '.join(diff)} differ "
                "from the recipe's; give the recipe the same architecture"
            )
    packer = _Packer(texts, tokenizer, recipe.block_size, seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    data = packer.epoch()
    pos, losses, t0 = 0, [], time.time()
    model.train()
    for step in range(recipe.steps):
        if pos + recipe.batch_size > len(data):
            data, pos = packer.epoch(), 0
        batch = data[pos : pos + recipe.batch_size]
        pos += recipe.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, recipe.steps, losses[-1])
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-20:]
    return {
        "recipe": asdict(recipe),
        "init_from": str(init_dir) if init_dir else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_tokens": packer.tokens,
        "final_loss": sum(tail) / len(tail),
        "loss_curve": losses[:: max(1, len(losses) // 50)],
        "seconds": round(time.time() - t0, 2),
    }
