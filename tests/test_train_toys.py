"""Tiny models, tokenizer and task for the training tests (built in-process, no network).

Helpers only plus a smoke test; the other ``test_train_*`` modules import from here.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from muscle.tasks.base import Doc, Task

N_KEYS = 24
WORDS = ["Question", "Answer", ":", "?", "yes", "no"] + [f"w{i}" for i in range(N_KEYS)]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models train much faster on one thread on a shared, loaded CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_tokenizer(folder: Path, extra: list[str] | None = None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + (extra or []))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tok.save_pretrained(folder)
    return tok


def make_model(folder: Path, seed: int, extra: list[str] | None = None, hidden: int = 32) -> Path:
    """A 2-layer Llama with random weights and the toy tokenizer, saved to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder, extra)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.3,  # confident predictions possible despite the tiny width
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def make_random_adapter(base: Path, folder: Path, seed: int, r: int = 4) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so the adapted model differs from base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules="all-linear",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(folder)
    return folder


class ToyTask(Task):
    """Two-choice questions ``Question: wA wB?`` whose answer is a fixed random yes/no table of
    the first word (8 possible first words); the second word is a distractor."""

    name = "toy-pairs"
    output_type = "multiple_choice"
    default_split = "train"

    def __init__(self, n_docs: int = 32, seed: int = 0, n_rule_keys: int = 8) -> None:
        rng = random.Random(seed)
        self.table = [rng.randrange(2) for _ in range(n_rule_keys)]
        self.docs: list[Doc] = []
        for i in range(n_docs):
            a, b = rng.randrange(n_rule_keys), rng.randrange(N_KEYS)
            self.docs.append({"_id": str(i), "a": f"w{a}", "b": f"w{b}", "label": self.table[a]})

    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        return [dict(d) for d in self.docs]

    def doc_to_text(self, doc: Doc) -> str:
        return f"Question: {doc['a']} {doc['b']}?\nAnswer:"

    def doc_to_target(self, doc: Doc) -> str:
        return self.doc_to_choices(doc)[doc["label"]]

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return ["no", "yes"]

    def gold_index(self, doc: Doc) -> int:
        return int(doc["label"])


def predict_choices(model: Any, tok: Any, task: ToyTask, docs: list[Doc]) -> list[int]:
    """Argmax over the (single-token) choices of the next-token distribution after the prompt."""
    import torch

    choice_ids = [tok.convert_tokens_to_ids(c) for c in ["no", "yes"]]
    preds = []
    model.eval()
    with torch.no_grad():
        for d in docs:
            ids = tok(task.doc_to_text(d), return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits[0, -1]
            preds.append(int(torch.argmax(logits[choice_ids])))
    return preds


def load_adapted(base: Path, adapter: Path) -> Any:
    from muscle.models import load_model

    model, _ = load_model(str(base), str(adapter), device="cpu", dtype="float32")
    return model


def test_toy_tokenizer_and_model_round_trip(tmp_path: Path) -> None:
    from muscle.models import load_model

    make_model(tmp_path / "m", seed=0)
    model, tok = load_model(str(tmp_path / "m"), device="cpu")
    task = ToyTask(4)
    ids = tok(task.doc_to_text(task.docs[0]))["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert len(predict_choices(model, tok, task, task.docs)) == 4
