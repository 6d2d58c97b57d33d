"""Composite (multimodal-style) models whose text settings live in a nested ``text_config``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from _eval_tiny import build_tokenizer, one_thread  # noqa: F401
from muscle.evaluation import evaluate, loglik
from muscle.models import load_model
from test_eval_core import assert_naive_scores, mc_spec


def test_nested_soft_capping_and_length_are_read(tmp_path):
    """A Gemma 4 model (what ``AutoModelForCausalLM`` loads for a ``gemma4`` folder) keeps its
    logit soft-capping and its length in ``text_config`` only: scores must still match its
    own full forward, and the length is the text config's."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    tok = build_tokenizer()
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(tok), vocab_size_per_layer_input=len(tok), hidden_size=32,
        intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, hidden_size_per_layer_input=8, final_logit_softcapping=2.0,
        initializer_range=0.4, max_position_embeddings=512, sliding_window=4096,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    cfg = Gemma4Config(text_config=text, vision_config=None, audio_config=None)
    assert getattr(cfg, "final_logit_softcapping", None) is None  # not on the top level
    Gemma4ForConditionalGeneration(cfg).save_pretrained(tmp_path / "g4")
    tok.save_pretrained(tmp_path / "g4")
    model, tok = load_model(str(tmp_path / "g4"), dtype="float32", device="cpu")
    assert type(model).__name__ == "Gemma4ForConditionalGeneration"
    assert not loglik._plain_head(model)
    assert loglik.model_max_length(model) == 512

    rows = [
        {"q": "Which is hot?", "choices": ["fire", "ice", "snow"], "l": 0},
        {"q": "Pick", "choices": ["a b c d e f g h i j k l", "z"], "l": 1},
        {"q": "How to boil water?", "choices": ["Heat it in a pot", "Freeze it"], "l": 0},
    ]
    task = mc_spec(tmp_path, rows, prompt="Q: {q}\nA:", name="nested")
    docs = task.load_docs()
    head_rows: list[int] = []  # positions the output head ran on, per forward
    hook = model.get_output_embeddings().register_forward_hook(
        lambda mod, args, out: head_rows.append(args[0].shape[:-1].numel())
    )
    res = evaluate(model, tok, task, docs, batch_size=3, show_progress=False)
    hook.remove()
    # one packed row per doc, the head at the scored positions only (the first token of every
    # choice is predicted from one position: the context's last), not at every position
    scored = sum(
        1 + sum(len(tok.encode(" " + c)) - 1 for c in task.doc_to_choices(d)) for d in docs
    )
    assert head_rows == [scored]
    assert_naive_scores(model, tok, task, docs, res.records)


@pytest.mark.parametrize("name", ["Gemma3Config", "Llama4Config", "Mistral3Config"])
def test_readers_use_the_text_config(name):
    """Length, head and window readers look in the nested text config of composite configs
    (config objects only: no model is built)."""
    import transformers

    text = {"max_position_embeddings": 777, "final_logit_softcapping": 30.0}
    if name == "Mistral3Config":
        text = {"max_position_embeddings": 777, "sliding_window": 99}
    cfg = getattr(transformers, name)(text_config=text)
    model = SimpleNamespace(config=cfg, get_decoder=object, get_output_embeddings=object)
    assert loglik.model_max_length(model) == 777
    assert loglik._plain_head(model) is (name == "Mistral3Config")
    windows = {"Mistral3Config": 99, "Gemma3Config": 4096, "Llama4Config": 8192}  # 8192: chunks
    assert loglik._sliding_window(model) == windows[name]


def test_llama4_chunked_attention_scores_as_its_own_forward(tmp_path):
    """Llama 4's causal LM answers ``get_decoder()`` with itself, and its layers attend within
    chunks of ``attention_chunk_size`` positions: scores (contexts longer than a chunk among
    them) must match the model's own full forward."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Llama4TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, intermediate_size_mlp=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        num_local_experts=2, num_experts_per_tok=1, max_position_embeddings=256,
        attention_chunk_size=8, initializer_range=0.4,
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    Llama4ForCausalLM(cfg).save_pretrained(tmp_path / "l4")
    tok.save_pretrained(tmp_path / "l4")
    model, tok = load_model(str(tmp_path / "l4"), dtype="float32", device="cpu")
    rows = [
        {"q": "Which is hot?", "choices": ["fire", "ice"], "l": 0},
        {"q": "How do you boil water on a stove at home?", "choices": ["Heat it", "no"], "l": 0},
        {"q": "Pick", "choices": ["a b c d e f g h i j k l m n", "z"], "l": 1},
    ]
    task = mc_spec(tmp_path, rows, prompt="Q: {q}\nA:", name="chunked")
    docs = task.load_docs()
    res = evaluate(model, tok, task, docs, batch_size=3, show_progress=False)
    assert_naive_scores(model, tok, task, docs, res.records)
    # behind a PEFT wrapper (an --adapter), whose get_decoder() is the causal LM inside
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    peft = get_peft_model(model, lora)
    assert not loglik._plain_head(peft)
    res = evaluate(peft, tok, task, docs, batch_size=3, show_progress=False)
    assert_naive_scores(peft, tok, task, docs, res.records)
