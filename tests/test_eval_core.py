"""Correctness of the evaluation runners against independent unbatched computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import muscle
from _eval_tiny import build_model, build_tokenizer, one_thread  # noqa: F401
from muscle.errors import MuscleError
from muscle.evaluation import build_context, evaluate
from muscle.evaluation.generate import truncate_at
from muscle.tasks import get_task
from muscle.tasks.spec import load_task_spec

GOALS = [
    "How do I open a jar?",
    "How to boil water",
    "Clean a pan",
    "How do I keep bread fresh for a long time without a fridge or any plastic bags at all?",
    "x",
    "Make tea.",
    "Fix a bike tyre that has a small hole in it",
]
SOLS = [
    ("Twist the lid.", "Heat it in a pot until it bubbles and then twist the lid hard."),
    ("Heat it in a pot", "Freeze it"),
    ("Use soap and water.", "Use sand"),
    ("Wrap it in a cloth.", "Leave it in the sun."),
    ("y", "a much longer answer with many tokens in it, to force padding"),
    ("Boil water, add leaves.", "Add leaves to cold milk."),
    ("Patch it.", "Throw the whole bike away"),
]


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return build_model(len(tok)), tok


def mc_spec(folder: Path, rows: list[dict], extra: str = "", prompt: str = "{q}", name="t"):
    """A multiple-choice spec task over ``rows`` (fields ``q``, ``choices``, ``l``), written to
    ``folder``; ``extra`` adds spec lines."""
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = folder / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\noutput_type: multiple_choice\ndata_files: {{test: t.jsonl}}\n"
        f"prompt: {json.dumps(prompt)}\nchoices_field: choices\nlabel_field: l\n{extra}"
    )
    return load_task_spec(str(spec))


def write_piqa(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "valid.jsonl").open("w") as fh:
        for g, (a, b) in zip(GOALS, SOLS, strict=True):
            fh.write(json.dumps({"goal": g, "sol1": a, "sol2": b}) + "\n")
    (folder / "valid-labels.lst").write_text(
        "\n".join(str(i % 2) for i in range(len(GOALS))) + "\n"
    )
    return folder


def naive_loglikelihood(model, tok, context: str, continuation: str) -> float:
    """Full-sequence, unbatched, no cache: sum of log p(continuation tokens)."""
    ctx = tok.encode(context, add_special_tokens=False)
    whole = tok.encode(context + continuation, add_special_tokens=False)
    cont = whole[len(ctx) :]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def assert_naive_scores(model, tok, task, docs, records) -> None:
    """Every record's choice log-likelihoods equal the naive loop's (" " + choice after the
    prompt)."""
    for rec, doc in zip(records, docs, strict=True):
        ref = [
            naive_loglikelihood(model, tok, task.doc_to_text(doc), " " + c)
            for c in task.doc_to_choices(doc)
        ]
        assert rec["loglikelihoods"] == pytest.approx(ref, abs=1e-4)


def test_piqa_records_match_unbatched_reference(tiny, tmp_path):
    model, tok = tiny
    task = get_task("piqa")
    docs = task.load_docs(str(write_piqa(tmp_path / "piqa")))
    results = {
        bs: evaluate(model, tok, task, docs, batch_size=bs, show_progress=False) for bs in (1, 3, 8)
    }
    for rec, doc in zip(results[8].records, docs, strict=True):
        ctx = task.doc_to_text(doc)
        ref = [naive_loglikelihood(model, tok, ctx, " " + c) for c in task.doc_to_choices(doc)]
        assert rec["loglikelihoods"] == pytest.approx(ref, abs=1e-4)
        assert rec["prediction"] == max(range(2), key=lambda i: ref[i])
        normed = [ll / len(c) for ll, c in zip(ref, task.doc_to_choices(doc), strict=True)]
        assert rec["prediction_norm"] == max(range(2), key=lambda i: normed[i])
        assert rec["correct"] == rec["acc"] == (rec["prediction"] == doc["label"])
        assert rec["target"] == doc["label"]
    for bs in (1, 3):
        for a, b in zip(results[bs].records, results[8].records, strict=True):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-4)
            assert a["prediction"] == b["prediction"]
    acc = sum(r["acc"] for r in results[8].records) / len(docs)
    assert results[8].summary["metrics"]["acc"]["value"] == pytest.approx(acc)
    assert results[8].summary["n"] == len(docs)


def test_a_model_left_in_training_mode_is_scored_without_dropout(tiny, tmp_path):
    """A notebook's freshly trained model is in training mode: scored with dropout off (as
    lm-eval does), its mode given back after; a negative few-shot count is refused."""
    model, tok = tiny
    task = get_task("piqa")
    docs = task.load_docs(str(write_piqa(tmp_path / "piqa")))
    want = [
        r["loglikelihoods"] for r in evaluate(model, tok, task, docs, show_progress=False).records
    ]
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    model.train()
    try:
        got = evaluate(model, tok, task, docs, show_progress=False).records
        assert model.training
    finally:
        model.eval()
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.0
    assert [r["loglikelihoods"] for r in got] == want
    with pytest.raises(MuscleError, match="--num-fewshot must be >= 0, got -1"):
        evaluate(model, tok, task, docs, num_fewshot=-1, show_progress=False)


def test_record_format(tiny, tmp_path):
    model, tok = tiny
    task = get_task("piqa")
    docs = task.load_docs(str(write_piqa(tmp_path / "piqa")))[:3]
    out = tmp_path / "r.jsonl"
    res = evaluate(model, tok, task, docs, batch_size=2, out_path=out, show_progress=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == json.loads(json.dumps(res.records))
    assert [r["id"] for r in lines] == ["0", "1", "2"]
    for r in lines:
        assert {"id", "doc_id", "task", "task_version", "doc_hash", "prompt_hash", "target"} <= set(
            r
        )
        assert {"prediction", "correct", "acc", "acc_norm", "loglikelihoods"} <= set(r)
        assert len(r["doc_hash"]) == len(r["prompt_hash"]) == 64
    summary = json.loads((tmp_path / "r.jsonl.summary.json").read_text())
    assert summary["n"] == 3 and summary["task"]["name"] == "piqa"
    assert summary["muscle_version"] == muscle.__version__
    lo, hi = summary["metrics"]["acc"]["ci95"]
    assert lo <= summary["metrics"]["acc"]["value"] <= hi
    assert summary["instances_per_second"] > 0
    assert not list(tmp_path.glob("r.jsonl.partial*"))


@pytest.mark.parametrize("plain_head", [True, False])
def test_variable_choice_counts_match_reference(tiny, tmp_path, monkeypatch, plain_head):
    """A spec task with 1-4 choices of very different lengths, through both the head-on-scored-
    positions path and the full-logits path (models with soft-capped or scaled logits)."""
    import muscle.evaluation.loglik as loglik

    model, tok = tiny
    assert loglik._plain_head(model)
    if not plain_head:
        monkeypatch.setattr(loglik, "_plain_head", lambda m: False)
    rows = [
        {"q": "Which is hot?", "choices": ["fire", "ice", "snow"], "label": 0},
        {"q": "Pick", "choices": ["a b c d e f g h i j k l", "z"], "label": "z"},
        {
            "q": "A very long question about the movie that was charming and affecting?",
            "choices": ["yes", "no", "maybe", "never ever again"],
            "label": 3,
        },
        {"q": "One", "choices": ["only"], "label": 0},
    ]
    rows = [{"l" if k == "label" else k: v for k, v in r.items()} for r in rows]
    task = mc_spec(tmp_path, rows, prompt="Q: {q}\nA:", name="varmc")
    docs = task.load_docs()
    res = evaluate(model, tok, task, docs, batch_size=4, show_progress=False)
    assert_naive_scores(model, tok, task, docs, res.records)
    assert [r["target"] for r in res.records] == [0, 1, 3, 0]


def test_spec_metric_acc_norm_decides_correct_and_prediction(tiny, tmp_path):
    """A task declaring ``metric: acc_norm`` logs ``correct``/``prediction`` by it, so
    ``muscle compare`` counts flips on the metric the summary reports."""
    model, tok = tiny
    rows = [
        {
            "q": f"Question {i}?",
            "choices": ["a", "a long and winding answer text", "bc"],
            "l": i % 3,
        }
        for i in range(12)
    ]
    results = {}
    for metric in ("acc", "acc_norm"):
        task = mc_spec(tmp_path, rows, f"metric: {metric}\n", name=metric)
        results[metric] = evaluate(model, tok, task, task.load_docs(), show_progress=False)
    for metric, res in results.items():
        assert res.summary["primary_metric"] == metric
        for rec, row in zip(res.records, rows, strict=True):
            lls = rec["loglikelihoods"]
            scores = (
                lls
                if metric == "acc"
                else [x / len(c) for x, c in zip(lls, row["choices"], strict=True)]
            )
            best = max(range(3), key=lambda k: (scores[k], -k))  # a naive argmax
            assert rec["prediction"] == best and rec["correct"] == (best == row["l"])
            assert rec["correct"] == rec[metric]
    assert any(a["acc"] != a["acc_norm"] for a in results["acc"].records)  # the two differ


def naive_greedy(model, tok, prompt: str, max_new: int) -> str:
    """Greedy decoding without cache or batching: argmax of the full forward each step."""
    ids = tok.encode(prompt, add_special_tokens=False)
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
    return tok.decode(new, skip_special_tokens=True)


def test_generation_batched_equals_one_at_a_time(tiny, tmp_path):
    model, tok = tiny
    rows = [
        {"question": q, "answer": f"step\n#### {n}"}
        for q, n in [
            ("Natalia sold 48 clips in April and half as many in May. How many?", 72),
            ("How many?", 3),
            ("A man is sitting on a roof with 10 tiles and takes 4 off. How many remain?", 6),
            ("Add 1,000 and $5.", 1005),
            ("Two", 2),
        ]
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("gsm8k")
    task.generation_kwargs = lambda: {"until": ["Question:", "\n\n"], "max_new_tokens": 12}
    docs = task.load_docs(str(tmp_path))
    kw = dict(num_fewshot=0, show_progress=False)  # zero-shot; lm-eval's GSM8K default is 5
    one = evaluate(model, tok, task, docs, batch_size=1, **kw)
    many = evaluate(model, tok, task, docs, batch_size=4, **kw)
    assert [r["generated"] for r in one.records] == [r["generated"] for r in many.records]
    for rec, doc in zip(many.records, docs, strict=True):
        ref = naive_greedy(model, tok, task.doc_to_text(doc), 12)
        assert rec["generated"] == truncate_at(ref, ["Question:", "\n\n", tok.eos_token])
        assert rec["target"] == doc["answer"].split("#### ")[1].replace(",", "")
        assert {"prediction_strict", "prediction_flexible", "correct"} <= set(rec)


def test_fewshot_context_is_seeded_by_doc_and_excludes_itself():
    task = get_task("gsm8k")
    docs = [{"_id": str(i), "question": f"q{i}?", "answer": f"w\n#### {i}"} for i in range(6)]
    ctx = build_context(task, docs[2], docs, 3)
    parts = ctx.split("\n\n")
    assert len(parts) == 4 and parts[-1] == "Question: q2?\nAnswer:"
    assert "q2?" not in "\n\n".join(parts[:-1])
    for p in parts[:-1]:
        q = p.split("?")[0].removeprefix("Question: q")
        assert p == f"Question: q{q}?\nAnswer: w\n#### {q}"
    assert ctx == build_context(task, docs[2], docs, 3)  # deterministic
    assert build_context(task, docs[2], docs, 0) == "Question: q2?\nAnswer:"
    # shots from another split: its doc "2" is another doc, so all three train docs serve
    train = [{"_id": str(i), "question": f"t{i}?", "answer": f"w\n#### {i}"} for i in range(3)]
    shots = build_context(task, docs[2], train, 3).split("\n\n")[:-1]
    assert sorted(p.split("?")[0] for p in shots) == [
        "Question: t0",
        "Question: t1",
        "Question: t2",
    ]
    with pytest.raises(MuscleError, match="needs at least 4 docs, have 3"):
        build_context(task, docs[2], train, 4)


def test_bos_adding_tokenizer_matches_reference(tiny, tmp_path):
    """A tokenizer that prepends BOS (as Llama-2's does): contexts and prompts keep it."""
    from tokenizers.processors import TemplateProcessing

    model, _ = tiny
    tok = build_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)]
    )
    assert tok.encode("Question")[0] == tok.bos_token_id
    task = get_task("piqa")
    docs = task.load_docs(str(write_piqa(tmp_path / "piqa")))[:4]
    res = evaluate(model, tok, task, docs, batch_size=4, show_progress=False)
    bos = [tok.bos_token_id]
    for rec, doc in zip(res.records, docs, strict=True):
        ctx_text = task.doc_to_text(doc)
        ctx = bos + tok.encode(ctx_text, add_special_tokens=False)
        ref = []
        for c in task.doc_to_choices(doc):
            whole = bos + tok.encode(ctx_text + " " + c, add_special_tokens=False)
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0], -1)
            ref.append(sum(float(logp[j - 1, whole[j]]) for j in range(len(ctx), len(whole))))
        assert rec["loglikelihoods"] == pytest.approx(ref, abs=1e-4)


def test_fewshot_examples_come_from_train_split(tmp_path):
    from muscle.evaluation.runner import _fewshot_pool

    task = get_task("gsm8k")
    for split, n in (("test", 3), ("train", 5)):
        rows = [{"question": f"{split}{i}?", "answer": f"#### {i}"} for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = task.load_docs(str(tmp_path), "test")
    pool = _fewshot_pool(task, str(tmp_path), None, docs)
    assert [d["question"] for d in pool] == [f"train{i}?" for i in range(5)]
    (tmp_path / "train.jsonl").unlink()
    assert _fewshot_pool(task, str(tmp_path), None, docs) == docs


def test_records_carry_the_category_and_keep_their_doc_hash(tiny, tmp_path):
    """A spec record's ``category`` (or ``category_field``) and HellaSwag's activity label reach
    the per-instance records, so ``compare --slice-by category`` works; the doc hash is that of
    the record as read (the internal ``_category`` does not change it)."""
    import hashlib

    from muscle.compare import compare_files
    from muscle.errors import MuscleError
    from muscle.tasks._data import canonical_json

    model, tok = tiny
    rows = [
        {"q": "Which is hot?", "choices": ["fire", "ice"], "label": 0, "kind": "heat"},
        {"q": "Which is cold?", "choices": ["fire", "ice"], "label": 1, "kind": "cold"},
        {"q": "Pick one", "choices": ["a", "b"], "label": 1, "kind": "heat"},
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = (
        "name: cats\noutput_type: multiple_choice\ndata_files: {test: t.jsonl}\n"
        "prompt: 'Q: {q}\\nA:'\nchoices_field: choices\nlabel_field: label\n"
    )
    (tmp_path / "spec.yaml").write_text(spec + "category_field: kind\n")
    task = load_task_spec(str(tmp_path / "spec.yaml"))
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.jsonl"
        res = evaluate(model, tok, task, task.load_docs(), out_path=out, show_progress=False)
        outs.append(str(out))
    assert [r["category"] for r in res.records] == ["heat", "cold", "heat"]
    for rec, row in zip(res.records, rows, strict=True):
        assert rec["doc_hash"] == hashlib.sha256(canonical_json(row).encode()).hexdigest()
    compat = compare_files(outs, None, names=["a", "b"], slice_by=["category"])
    counts = {s["value"]: s["n"] for s in compat["slices"]["category"]}
    assert counts == {"heat": 2, "cold": 1}

    # Without category_field, a field named `category` is used; a named field that a record
    # lacks is refused with file and line.
    plain = [{**r, "category": r["kind"].upper()} for r in rows]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    (tmp_path / "spec.yaml").write_text(spec)
    docs = load_task_spec(str(tmp_path / "spec.yaml")).load_docs()
    assert [d["_category"] for d in docs] == ["HEAT", "COLD", "HEAT"]
    (tmp_path / "spec.yaml").write_text(spec + "category_field: topic\n")
    with pytest.raises(MuscleError, match=r"t\.jsonl:1: record has no category field 'topic'"):
        load_task_spec(str(tmp_path / "spec.yaml")).load_docs()

    hs = tmp_path / "hs"
    hs.mkdir()
    (hs / "hellaswag_val.jsonl").write_text(
        json.dumps(
            {
                "ind": 7,
                "activity_label": "Baking cookies",
                "ctx_a": "A woman mixes dough.",
                "ctx_b": "she",
                "endings": ["bakes it.", "sings.", "runs.", "sleeps."],
                "label": 0,
            }
        )
        + "\n"
    )
    task = get_task("hellaswag")
    res = evaluate(model, tok, task, task.load_docs(str(hs)), show_progress=False)
    assert res.records[0]["category"] == "Baking cookies"


def test_truncated_prompts_and_placeholder_labels_are_flagged(tiny, tmp_path, monkeypatch):
    """A context longer than the model takes loses its start (as in lm-eval): its record says
    so and the summary warns; so does a split whose gold answers are all one choice."""
    model, tok = tiny
    rows = [
        {"q": ("word " * (3 + 7 * (i % 2))).strip() + f" {i}?", "choices": ["yes", "no"], "l": 0}
        for i in range(20)
    ]
    task = mc_spec(tmp_path, rows, name="cut")
    docs = task.load_docs()
    need = {}  # a naive count: context tokens, and the room the longest choice leaves
    for doc in docs:
        ctx = tok.encode(task.doc_to_text(doc))
        conts = [len(tok.encode(task.doc_to_text(doc) + " " + c)) - len(ctx) for c in ("yes", "no")]
        need[doc["_id"]] = (len(ctx), max(conts))
    limit = sorted(a + b for a, b in need.values())[10] - 2  # the longer half does not fit
    monkeypatch.setattr(model.config, "max_position_embeddings", limit)
    res = evaluate(model, tok, task, docs, show_progress=False)
    for rec in res.records:
        n_ctx, room = need[rec["id"]]
        assert rec.get("truncated", False) == (n_ctx + room - 1 > limit)  # lm-eval's cut
    cut = sum(1 for r in res.records if r.get("truncated"))
    assert 0 < cut < len(docs)
    first, second = res.summary["warnings"]
    assert first.startswith(f"{cut} of 20 prompts were longer than the model takes")
    assert second.startswith("every gold answer is choice 0")
    monkeypatch.setattr(model.config, "max_position_embeddings", 1024)
    res = evaluate(model, tok, task, docs[:19], show_progress=False)
    assert res.summary["warnings"] == []  # no cut; 19 docs are too few to judge the labels


def lm_eval_loglikelihood(model, ctx: list[int], cont: list[int], max_len: int) -> float:
    """lm-eval's ``_loglikelihood_tokens`` for one choice, unbatched: the input
    ``(ctx + cont)[-(max_len + 1):][:-1]``, the continuation scored at its last positions."""
    inp = (ctx + cont)[-(max_len + 1) :][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([inp])).logits[0].double(), -1)
    start = len(inp) - len(cont)
    return sum(float(logp[start + j, t]) for j, t in enumerate(cont))


def _check_against_lm_eval(model, tok, tmp_path, rows, max_len: int, batch_size: int = 3):
    task = mc_spec(tmp_path, rows, name="ref")
    docs = task.load_docs()
    res = evaluate(model, tok, task, docs, batch_size=batch_size, show_progress=False)
    for rec, doc in zip(res.records, docs, strict=True):
        ctx_text = task.doc_to_text(doc)
        ctx = tok.encode(ctx_text)
        ref = []
        for c in task.doc_to_choices(doc):
            cont = tok.encode(ctx_text + " " + c)[len(ctx) :]
            ref.append(lm_eval_loglikelihood(model, ctx, cont, max_len))
        assert rec["loglikelihoods"] == pytest.approx(ref, abs=1e-4), rec["id"]
    return res


LONG_ROWS = [
    {
        "q": f"A very long question {i} about the movie that was charming and often affecting?",
        "choices": ["yes", "no it is a bleak and desperate film", "maybe"],
        "l": 0,
    }
    for i in range(5)
] + [{"q": "Short?", "choices": ["yes", "no"], "l": 1}]


@pytest.mark.parametrize("plain_head", [True, False])
def test_truncated_contexts_are_cut_per_choice_as_lm_eval(tiny, tmp_path, monkeypatch, plain_head):
    """Where context and choice exceed the model's length, each choice keeps as much of the
    context as fits beside *it* (lm-eval's rule), in batches mixing cut and uncut instances;
    through the head-on-scored-positions path and the full-logits one."""
    import muscle.evaluation.loglik as loglik

    model, tok = tiny
    if not plain_head:
        monkeypatch.setattr(loglik, "_plain_head", lambda m: False)
    monkeypatch.setattr(model.config, "max_position_embeddings", 16)
    res = _check_against_lm_eval(model, tok, tmp_path, LONG_ROWS, max_len=16)
    assert [bool(r.get("truncated")) for r in res.records] == [True] * 5 + [False]


@pytest.mark.parametrize("window", [6, 4096])
def test_sliding_window_models_score_as_their_own_forward(tmp_path, window):
    """Mistral-style sliding attention: contexts longer than the window are scored with the
    model's own mask (the packed 4D mask would attend across the window)."""
    from transformers import MistralConfig, MistralForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=window,
        initializer_range=0.4, max_position_embeddings=1024,
    )  # fmt: skip
    model = MistralForCausalLM(cfg).float().eval()
    _check_against_lm_eval(model, tok, tmp_path, LONG_ROWS, max_len=1024)


def test_alibi_models_are_scored(tmp_path):
    """ALiBi models (Bloom) take no 4D mask with restarting positions: one row per choice."""
    from transformers import BloomConfig, BloomForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = BloomConfig(vocab_size=len(tok), hidden_size=32, n_layer=2, n_head=4)
    model = BloomForCausalLM(cfg).float().eval()
    _check_against_lm_eval(model, tok, tmp_path, LONG_ROWS, max_len=2048)
