"""A tiny random Llama and byte-level BPE tokenizer for the eval tests (built in-process)."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = """Question: How do I open a jar? Answer: Twist the lid counter clockwise.
Question: How to boil water? Answer: Heat it in a pot until it bubbles.
Dialogue: Anna: hi Bob: hello there Summary: Anna greets Bob.
The movie is charming and often affecting. It was a bleak and desperate film.
Natalia sold clips to 48 of her friends in April, and then she sold half as many in May.
How many clips did Natalia sell altogether in April and May? #### 72
A man is sitting on a roof. He starts pulling up roofing on a roof. She bends down.
positive negative yes no true false 0 1 2 3 4 5 6 7 8 9 10 100 1,000 $5.
"""


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS] * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_sentencepiece_tokenizer(merge_across_words: bool = False):
    """A Llama-2-style tokenizer (SentencePiece conventions: ``▁`` for spaces, one prepended,
    BOS added), where a text encoded on its own differs from the same text after a context.
    Its merges stay within words, as SentencePiece's do, unless ``merge_across_words`` (then a
    token can span the end of a prompt and the start of its answer)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=["\u2581"]
    )
    if not merge_across_words:  # learn merges word by word, then encode as Llama 2 does
        tok.pre_tokenizer = pre_tokenizers.Split("\u2581", "merged_with_next")
    tok.train_from_iterator([CORPUS] * 3, trainer)
    tok.pre_tokenizer = None
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def build_model(vocab_size: int, seed: int = 0, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.4,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).float().eval()


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer folder loadable with ``from_pretrained``."""
    tok = build_tokenizer()
    model = build_model(len(tok), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; several threads on a busy shared CPU make every
    small matmul wait for the others (60x slower measured).  Import into a test module to use."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
