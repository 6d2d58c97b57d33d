"""Generation: stop sequences end generation early and cut the text; samsum's
no_repeat_ngram_size=2 equals an independent greedy loop that bans repeated bigrams."""

from __future__ import annotations

import json

import pytest
import torch

from _eval_tiny import build_model, build_tokenizer, one_thread  # noqa: F401
from muscle.evaluation import evaluate
from muscle.evaluation.generate import StopOnStrings, truncate_at
from muscle.tasks import get_task
from muscle.tasks.spec import load_task_spec


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return build_model(len(tok), seed=3), tok


def greedy(model, tok, prompt: str, max_new: int, no_repeat: int = 0) -> list[int]:
    ids = tok.encode(prompt, add_special_tokens=False)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].clone()
            seq = ids + new
            if no_repeat == 2 and seq:
                for a, b in zip(seq, seq[1:], strict=False):
                    if a == seq[-1]:
                        logits[b] = -float("inf")
            nxt = int(logits.argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    return new


def test_truncate_and_stop_criterion(tiny):
    _, tok = tiny
    assert truncate_at("a b\n\nc Question: d", ["Question:", "\n\n"]) == "a b"
    assert truncate_at("no stop", ["\n\n"]) == "no stop"
    # leading whitespace never stops (instruct models often open with a blank line)
    assert truncate_at("\n\n Eric and Rob.\n\nMore", ["\n\n"]) == "\n\n Eric and Rob."
    assert truncate_at("  \n", ["\n"]) == "  \n"
    rows = [
        tok.encode("x Question: y", add_special_tokens=False),
        tok.encode("plain text here", add_special_tokens=False),
    ]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    crit = StopOnStrings(tok, ["Question:"], prompt_len=0)
    assert crit(ids, None).tolist() == [True, False]
    lead = tok.encode("\n\n", add_special_tokens=False)
    crit = StopOnStrings(tok, ["\n\n"], prompt_len=0)
    assert crit(torch.tensor([lead]), None).tolist() == [False]
    more = lead + tok.encode("A man\n\n", add_special_tokens=False)
    assert crit(torch.tensor([more]), None).tolist() == [True]


def test_stop_sequence_ends_generation_early(tiny, tmp_path):
    model, tok = tiny
    prompts = ["Q: The movie is\nA:", "Q: How many clips\nA:", "Q: A man\nA:"]
    max_new = 24
    refs = [tok.decode(greedy(model, tok, p, max_new), skip_special_tokens=True) for p in prompts]
    # a stop string taken from the middle of the first reference output
    stop = next(
        refs[0][i : i + 2] for i in range(3, len(refs[0]) - 2) if refs[0][i : i + 2].strip()
    )
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"q": p.split("\n")[0][3:], "a": "x"}) + "\n" for p in prompts)
    )
    (tmp_path / "s.yaml").write_text(
        "name: g\noutput_type: generate_until\ndata_files: {test: d.jsonl}\n"
        f'prompt: "Q: {{q}}\\nA:"\ntarget_field: a\nuntil: [{json.dumps(stop)}]\n'
        f"max_new_tokens: {max_new}\n"
    )
    task = load_task_spec(str(tmp_path / "s.yaml"))
    calls = {"n": 0}
    hook = model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        res = evaluate(model, tok, task, task.load_docs()[:1], batch_size=1, show_progress=False)
    finally:
        hook.remove()
    assert res.records[0]["generated"] == truncate_at(refs[0], [stop])
    assert calls["n"] < max_new  # stopped before max_new_tokens
    res = evaluate(model, tok, task, task.load_docs(), batch_size=3, show_progress=False)
    assert [r["generated"] for r in res.records] == [truncate_at(r, [stop]) for r in refs]


def test_samsum_no_repeat_ngram_matches_reference(tiny, tmp_path):
    _, tok = tiny
    model = build_model(len(tok), seed=7)  # a seed whose greedy output repeats bigrams
    rows = [
        {"dialogue": "Anna: hi\nBob: hello there", "summary": "Anna greets Bob."},
        {"dialogue": "Bob: bye", "summary": "Bob leaves."},
        {"dialogue": "Anna: the movie was charming and affecting\nBob: bleak", "summary": "x"},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("samsum")
    task.generation_kwargs = lambda: {
        "until": ["Dialogue:", "Summary:", "\n\n"],
        "max_new_tokens": 16,
        "no_repeat_ngram_size": 2,
    }
    docs = task.load_docs(str(tmp_path))
    res = evaluate(model, tok, task, docs, batch_size=2, show_progress=False)
    banned = [greedy(model, tok, task.doc_to_text(d), 16, no_repeat=2) for d in docs]
    plain = [greedy(model, tok, task.doc_to_text(d), 16) for d in docs]
    assert banned != plain  # the ban matters for this model and these prompts
    for rec, new in zip(res.records, banned, strict=True):
        ref = truncate_at(
            tok.decode(new, skip_special_tokens=True),
            ["Dialogue:", "Summary:", "\n\n", tok.eos_token],
        )
        assert rec["generated"] == ref
        assert 0.0 <= rec["score"] == rec["rouge1"] <= 1.0
        assert {"rouge2", "rougeL", "prediction"} <= set(rec)
    assert res.summary["primary_metric"] == "score"
    assert res.summary["metrics"]["score"]["value"] == pytest.approx(
        sum(r["score"] for r in res.records) / 3
    )
