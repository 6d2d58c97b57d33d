"""``train_task_adapter``: output, split, best epoch, seeds, labels, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from muscle.errors import MuscleError
from muscle.training import TaskTrainingConfig, train_task_adapter
from muscle.training.data import encode_doc, split_docs
from test_train_toys import ToyTask, make_model, one_thread


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("base") / "m", seed=0)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _cfg(base: Path, out: Path, **kw) -> TaskTrainingConfig:
    defaults = dict(
        model=str(base),
        task=ToyTask(20),
        output_dir=str(out),
        lora_r=4,
        lora_alpha=8,
        num_train_epochs=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        logging_steps=1,
        device="cpu",
        show_progress=False,
        seed=1,
    )
    defaults.update(kw)
    return TaskTrainingConfig(**defaults)


def test_task_adapter_outputs_and_best_epoch(base: Path, tmp_path: Path) -> None:
    res = train_task_adapter(_cfg(base, tmp_path / "out"))
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "adapter_config.json").is_file()
    saved = json.loads((out / "training.json").read_text())
    assert saved["best_epoch"] == res["best_epoch"]
    assert saved["data"]["n_train"] == 16 and saved["data"]["n_val"] == 4
    assert len(saved["data"]["hash"]) == 64
    assert saved["config"]["lora_r"] == 4 and saved["config"]["task"] == "toy-pairs"
    epochs = saved["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all("train_loss" in e and "val_loss" in e for e in epochs)
    best = min(epochs, key=lambda e: e["val_loss"])
    assert saved["best_epoch"] == best["epoch"]
    # warm-up for small data: min(500, ceil(10% of 12 steps)) = 2
    assert saved["total_steps"] == 12 and saved["warmup_steps"] == 2
    # per-step logs carry loss, the CE term and the learning rate
    steps = [h for h in saved["log_history"] if "loss" in h and "eval_loss" not in h]
    assert steps and all("learning_rate" in h and "ce" in h for h in steps)
    assert not (out / "best").exists()


def test_best_epoch_weights_are_the_saved_adapter(base: Path, tmp_path: Path) -> None:
    """Evaluating the saved adapter on the validation docs reproduces the best val loss."""
    import torch

    from muscle.models import load_model
    from muscle.training.data import Collator, encode_docs
    from muscle.training.losses import compat_loss

    task = ToyTask(20)
    cfg = _cfg(base, tmp_path / "o", task=task, learning_rate=3e-2, num_train_epochs=4)
    res = train_task_adapter(cfg)
    model, tok = load_model(str(base), str(tmp_path / "o"), device="cpu", dtype="float32")
    _, val = split_docs(task.load_docs(), 0.2, cfg.seed)
    batch = Collator(tok.pad_token_id)(list(encode_docs(tok, task, val, "all", 512)))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = compat_loss(logits, batch["labels"], mask="none").loss.item()
    best = min(e["val_loss"] for e in res["epochs"])
    assert loss == pytest.approx(best, rel=1e-4)


def test_seed_repeatable_and_seed_matters(base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = train_task_adapter(_cfg(base, tmp_path / "a", num_train_epochs=1))
    b = train_task_adapter(_cfg(base, tmp_path / "b", num_train_epochs=1))
    c = train_task_adapter(_cfg(base, tmp_path / "c", num_train_epochs=1, seed=2))
    wa = load_file(tmp_path / "a" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter_model.safetensors")
    wc = load_file(tmp_path / "c" / "adapter_model.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any(not (wa[k] == wc[k]).all() for k in wa)
    assert a["epochs"] == b["epochs"] and a["epochs"] != c["epochs"]


def test_split_is_seeded_80_20_and_disjoint() -> None:
    docs = [{"_id": str(i)} for i in range(50)]
    tr, va = split_docs(docs, 0.2, 7)
    assert len(tr) == 40 and len(va) == 10
    assert {d["_id"] for d in tr} | {d["_id"] for d in va} == {str(i) for i in range(50)}
    assert split_docs(docs, 0.2, 7) == (tr, va)
    assert split_docs(docs, 0.2, 8) != (tr, va)


def test_loss_on_answer_masks_the_prompt(base: Path) -> None:
    from muscle.models import load_tokenizer

    tok = load_tokenizer(str(base))
    task = ToyTask(2)
    doc = task.docs[0]
    full = encode_doc(tok, task, doc, "all", 512)
    ans = encode_doc(tok, task, doc, "answer", 512)
    assert full["input_ids"] == ans["input_ids"]
    # every token but the first, which no logit predicts (model classes count it or not)
    assert full["labels"] == [-100, *full["input_ids"][1:]]
    n_prompt = len(tok(task.doc_to_text(doc))["input_ids"])
    assert ans["labels"][:n_prompt] == [-100] * n_prompt
    assert ans["labels"][n_prompt:] == full["input_ids"][n_prompt:]
    answer_tokens = tok.convert_ids_to_tokens(ans["input_ids"][n_prompt:])
    assert answer_tokens == [task.doc_to_target(doc), "</s>"]
    short = encode_doc(tok, task, doc, "all", 3)
    assert short["input_ids"] == full["input_ids"][-3:]
    assert short["labels"] == [-100, *full["input_ids"][-2:]]


def test_an_answer_longer_than_max_length_keeps_the_prompts_end(base: Path) -> None:
    """An example is never an answer without its question: the prompt is cut from its start
    while the answer fits, but keeps at least half of --max-length; the answer then loses its
    end (and EOS).  Counted, and named in the run's warnings."""
    from muscle.models import load_tokenizer
    from muscle.training.api import _data_notes
    from muscle.training.data import encode_docs, kept_lengths

    class Long(ToyTask):
        def doc_to_target(self, doc):
            return "yes no yes no yes no yes no"

    tok = load_tokenizer(str(base))
    task = Long(2)
    doc = task.docs[0]
    full = encode_doc(tok, task, doc, "answer", 10_000)["input_ids"]
    n_prompt = len(tok(task.doc_to_text(doc))["input_ids"])  # 8: <s> Question : wA wB ? Answer :
    prompt, answer = full[:n_prompt], full[n_prompt:]  # the answer: 8 words and </s>
    cut = encode_doc(tok, task, doc, "answer", 7)
    assert cut["input_ids"] == prompt[-3:] + answer[:4]  # the prompt's end: "? Answer :"
    assert tok.convert_ids_to_tokens(cut["input_ids"][:3]) == ["?", "Answer", ":"]
    assert cut["labels"] == [-100] * 3 + answer[:4]
    # the rule: the answer stays whole while the prompt keeps half; a short prompt stays whole
    assert kept_lengths(8, 3, 8) == (5, 3)
    assert kept_lengths(8, 9, 7) == (3, 4) and kept_lengths(8, 9, 8) == (4, 4)
    assert kept_lengths(2, 9, 8) == (2, 6) and kept_lengths(8, 9, 17) == (8, 9)
    data = encode_docs(tok, task, task.docs, "answer", 7)
    assert (data.n_truncated, data.n_answer_cut) == (2, 2)
    data = encode_docs(tok, ToyTask(2), ToyTask(2).docs, "answer", 7)  # answers of 2 tokens
    assert (data.n_truncated, data.n_answer_cut) == (2, 0)
    info = {"truncated": 2, "answer_cut": 1, "n_train": 3, "n_val": 1}
    (note,) = _data_notes(_cfg(base, Path("o"), max_length=7), info, planned=10)
    assert note.startswith("2 of 4 examples were longer than --max-length 7 and were cut")
    assert "1 answer(s) longer than half of it also lost their end" in note


def test_training_answer_tokens_are_the_ones_evaluation_scores() -> None:
    """With SentencePiece conventions an answer encoded on its own gets an extra ``▁``; the
    labels must be the continuation tokens ``muscle eval`` scores (lm-eval's split)."""
    from _eval_tiny import build_sentencepiece_tokenizer
    from muscle.evaluation.loglik import encode_pair

    tok = build_sentencepiece_tokenizer()
    task = ToyTask(4)
    alone = tok(" yes", add_special_tokens=False)["input_ids"]
    assert alone != encode_pair(tok, "Question: open?", " yes")[1]  # the trap is real here
    for doc in task.docs:
        enc = encode_doc(tok, task, doc, "answer", 512)
        prompt = task.doc_to_text(doc)
        ctx, cont = encode_pair(tok, prompt, task.target_delimiter + task.doc_to_target(doc))
        assert enc["input_ids"] == ctx + cont + [tok.eos_token_id]
        assert [t for t in enc["labels"] if t != -100] == cont + [tok.eos_token_id]
        assert enc["input_ids"][0] == tok.bos_token_id


def test_generation_training_starts_from_the_ids_evaluation_generates_from() -> None:
    """A generation spec whose prompt ends in a space (``target_delimiter: ""``): ``muscle
    eval``, as lm-eval's ``generate_until``, generates after the whole prompt's ids, its space a
    token of its own; training starts from those ids too (it moved the space into the answer's
    first token, as scoring does, and so trained after a prompt evaluation never shows)."""
    from _eval_tiny import build_sentencepiece_tokenizer, build_tokenizer
    from muscle.evaluation.loglik import encode
    from muscle.evaluation.runner import build_context
    from muscle.tasks.spec import SpecTask

    # an answer whose first word merges with the space before it: "Ġit" (byte-level BPE), "▁it"
    # (SentencePiece: its every text starts with "▁"; "it" is a token too)
    for tok in (build_tokenizer(), build_sentencepiece_tokenizer()):
        for prompt, delim in (("Question: {q}\nAnswer: ", ""), ("Question: {q}\nAnswer:", " ")):
            spec = {"name": "g", "output_type": "generate_until", "prompt": prompt,
                    "target_field": "a", "target_delimiter": delim}  # fmt: skip
            task = SpecTask(spec, Path("g.yaml"))
            doc = {"_id": "0", "q": "the cat", "a": "it is"}
            context = build_context(task, doc, [], 0)
            generates_from = encode(tok, context)
            enc = encode_doc(tok, task, doc, "answer", 512)
            ids, n = enc["input_ids"], len(generates_from)
            assert ids[:n] == generates_from, (prompt, tok.convert_ids_to_tokens(ids))
            assert enc["labels"] == [-100] * n + ids[n:] and ids[-1] == tok.eos_token_id
            text = context + delim + doc["a"]
            assert tok.decode(ids, skip_special_tokens=True) == tok.decode(
                encode(tok, text), skip_special_tokens=True
            )


def test_model_mistakes_are_one_line_before_any_output(base: Path, tmp_path: Path) -> None:
    """A device this machine lacks, target modules the base has not, a tokenizer without EOS:
    one line each, and no output folder left behind."""
    import shutil

    cases = [(dict(target_modules=["foo_proj"]), r"--target-modules \['foo_proj'\]: .*q_proj")]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), "no CUDA device is available here"))
    no_eos = tmp_path / "no_eos"
    shutil.copytree(base, no_eos)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = no_eos / name
        if f.is_file():
            cfg = json.loads(f.read_text())
            for key in ("eos_token", "pad_token"):
                cfg.pop(key, None)
            f.write_text(json.dumps(cfg))
    cases.append((dict(model=str(no_eos)), "the tokenizer has no EOS token"))
    for change, message in cases:
        with pytest.raises(MuscleError, match=message):
            train_task_adapter(_cfg(base, tmp_path / "o", **change))
        assert not (tmp_path / "o").exists(), change


def test_bad_target_modules_list_gpt2_conv1d_layers(tmp_path: Path) -> None:
    """GPT-2's attention and MLP layers are ``transformers`` ``Conv1D`` modules, which LoRA
    targets too: a bad --target-modules names them (the list was empty)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from test_train_toys import make_tokenizer

    folder = tmp_path / "gpt2"
    tok = make_tokenizer(folder)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    with pytest.raises(MuscleError, match=r"linear layers: c_attn, c_fc, c_proj$"):
        train_task_adapter(_cfg(folder, tmp_path / "o", target_modules=["foo"]))


def test_training_ids_spell_the_text_when_tokens_merge_across_the_boundary() -> None:
    """Where the prompt's own tokens are not the start of the text's (a token spanning prompt
    and answer, an EOS appended to every text), the ids are the text's own tokens, labelled from
    the first token reaching into the answer, with one EOS."""
    from tokenizers import processors

    from _eval_tiny import build_sentencepiece_tokenizer

    class QA(ToyTask):
        def doc_to_text(self, doc):
            return "Question: How do I open a jar? Answer:"

        def doc_to_target(self, doc):
            return "Twist the lid"

    task, tok = QA(1), build_sentencepiece_tokenizer(merge_across_words=True)
    text = task.doc_to_text({}) + " " + task.doc_to_target({})
    for append_eos in (False, True):
        if append_eos:
            tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
                single="<s> $A </s>",
                special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)],
            )
        enc = encode_doc(tok, task, {}, "answer", 512)
        ids = enc["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text  # nothing lost or doubled
        assert ids[-1] == tok.eos_token_id and ids[-2] != tok.eos_token_id
        first = next(i for i, y in enumerate(enc["labels"]) if y != -100)
        assert all(y != -100 for y in enc["labels"][first:])
        before = tok.decode(ids[:first], skip_special_tokens=True)
        assert text.startswith(before) and len(before) <= len(task.doc_to_text({}))
        upto = tok.decode(ids[: first + 1], skip_special_tokens=True)
        assert len(upto) > len(task.doc_to_text({}))  # the first label reaches into the answer


def test_refuses_finished_output_and_bad_values(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "training.json").write_text("{}")
    with pytest.raises(MuscleError, match="finished run"):
        train_task_adapter(_cfg(base, out))
    (out / "checkpoints" / "checkpoint-4").mkdir(parents=True)  # a finished run keeps some
    with pytest.raises(MuscleError, match="finished run"):  # --resume would rewrite it
        train_task_adapter(_cfg(base, out, resume=True))
    assert (out / "training.json").read_text() == "{}"
    with pytest.raises(MuscleError, match="loss-on"):
        train_task_adapter(_cfg(base, tmp_path / "y", loss_on="prompt"))
    with pytest.raises(MuscleError, match="no checkpoint"):
        train_task_adapter(_cfg(base, tmp_path / "z", resume=True))


def test_a_failed_run_leaves_no_empty_output_folder(base: Path, tmp_path: Path) -> None:
    """A run that fails before writing (here: no such model) removes the --out folder it
    created, and leaves alone one the user made."""
    missing = tmp_path / "no-such-model"
    with pytest.raises(MuscleError, match="not found"):
        train_task_adapter(_cfg(missing, tmp_path / "a" / "out"))
    assert not (tmp_path / "a" / "out").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(MuscleError, match="not found"):
        train_task_adapter(_cfg(missing, tmp_path / "mine"))
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())


def test_resume_skips_an_interrupted_save_and_refuses_other_options(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted run resumes from its newest *complete* checkpoint (a save cut short has
    no trainer_state.json) and ends as an uninterrupted run; options that change the result
    are refused, logging options are not."""
    from safetensors.torch import load_file

    from muscle.training.trainer import StepLimitCallback

    full = train_task_adapter(_cfg(base, tmp_path / "full", save_steps=2))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_task_adapter(_cfg(base, out, save_steps=2), callbacks=[StepLimitCallback(7)])
    ckpts = out / "checkpoints"
    assert (ckpts / "checkpoint-6" / "trainer_state.json").is_file()
    (ckpts / "checkpoint-8").mkdir()  # a save interrupted before it wrote anything
    (ckpts / "checkpoint-9").mkdir()
    (ckpts / "checkpoint-9" / "trainer_state.json").write_text('{"global_st')  # cut short
    with pytest.raises(MuscleError, match=r"other options \(--learning-rate 0.005 -> 0.001\)"):
        train_task_adapter(_cfg(base, out, save_steps=2, resume=True, learning_rate=1e-3))
    with pytest.raises(MuscleError, match=r"--lora-r 4 -> 8; --lora-alpha 8 -> 16"):
        train_task_adapter(_cfg(base, out, save_steps=2, resume=True, lora_r=8, lora_alpha=16))
    monkeypatch.setenv("WORLD_SIZE", "2")  # another number of processes: another global batch
    with pytest.raises(MuscleError, match=r"other options \(processes 1 -> 2\)"):
        train_task_adapter(_cfg(base, out, save_steps=2, resume=True))
    monkeypatch.delenv("WORLD_SIZE")
    resumed = train_task_adapter(
        _cfg(base, out, save_steps=2, resume=True, logging_steps=5, save_total_limit=3)
    )
    assert resumed["total_steps"] == full["total_steps"]
    assert resumed["best_epoch"] == full["best_epoch"]
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # every checkpoint but an incomplete one: the resume fails with one line
    bare = tmp_path / "bare"
    (bare / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(MuscleError, match="no complete checkpoint"):
        train_task_adapter(_cfg(base, bare, resume=True))


def _expected_stop(vals: list[float], patience: int) -> int:
    """Reference: epochs run when stopping after ``patience`` epochs without a new best."""
    best, since = float("inf"), 0
    for n, v in enumerate(vals, start=1):
        if v < best:
            best, since = v, 0
        else:
            since += 1
            if since >= patience:
                return n
    return len(vals)


def test_early_stopping_stops_after_patience_epochs_without_improvement(
    base: Path, tmp_path: Path
) -> None:
    kw = dict(num_train_epochs=12, learning_rate=5e-2, warmup_ratio=0.0)
    full = train_task_adapter(_cfg(base, tmp_path / "full", **kw))
    vals = [e["val_ce"] for e in full["epochs"]]
    n = _expected_stop(vals, patience=1)
    assert n < len(vals), f"validation CE never failed to improve: {vals}"
    stopped = train_task_adapter(_cfg(base, tmp_path / "es", early_stopping_patience=1, **kw))
    # the same run up to the first epoch without a new best
    got = [e["val_ce"] for e in stopped["epochs"]]
    assert got == pytest.approx(vals[:n], rel=1e-5)
    assert stopped["best_epoch"] == vals[:n].index(min(vals[:n])) + 1
    # the learning rate at the stop, against the linear schedule by hand (no warm-up; the
    # logged rates may lag the schedule by a step)
    steps, planned = stopped["total_steps"], stopped["planned_steps"]
    left = 1 - steps / planned
    flagged = [w for w in stopped["warnings"] if w.startswith("early stopping ended")]
    assert bool(flagged) is (left > 0.5), (left, stopped["warnings"])
    if flagged:
        pct = float(re.search(r"at (\d+) % of its peak", flagged[0]).group(1))
        assert abs(pct - 100 * left) <= 100 / planned + 0.5
    assert not any(w.startswith("early stopping ended") for w in full["warnings"])
    with pytest.raises(MuscleError, match="early-stopping-patience"):
        _cfg(base, tmp_path / "x", early_stopping_patience=0).validate()


def test_early_stopping_counts_a_tie_as_no_improvement(tmp_path: Path) -> None:
    """The callback alone, on given validation figures: a repeated best value does not reset
    the patience (a compatibility run whose student never moves stops), nor does NaN."""
    from types import SimpleNamespace

    from muscle.training.trainer import BestEpochCallback

    def stops_after(vals: list[float], patience: int) -> int | None:
        cb = BestEpochCallback(tmp_path / "best", patience=patience)
        state = SimpleNamespace(log_history=[], global_step=0, is_world_process_zero=False)
        for n, v in enumerate(vals, start=1):
            state.global_step = n
            state.log_history.append({"eval_ce": v, "step": n})
            control = SimpleNamespace(should_training_stop=False)
            cb.on_evaluate(None, state, control, metrics={"eval_ce": v})
            if control.should_training_stop:
                return n
        return None

    assert stops_after([1.0, 0.5, 0.5, 0.5], patience=2) == 4
    assert stops_after([1.0, 0.5, 0.4, 0.3], patience=1) is None
    assert stops_after([1.0, float("nan"), 0.9, 0.95], patience=2) is None
    assert stops_after([1.0, float("nan"), 1.2, 0.9], patience=2) == 3  # NaN: no improvement
    # the same rule as the reference loop the run-level test uses
    for vals in ([1.0, 0.5, 0.5, 0.5], [2.0, 1.0, 1.1, 0.9, 0.9, 0.95], [3.0, 2.0, 1.0, 1.0]):
        assert (stops_after(vals, 2) or len(vals)) == _expected_stop(vals, 2)


def test_the_kept_adapter_and_the_reported_epoch_follow_one_rule(tmp_path: Path) -> None:
    """The callback keeps the adapter of the epoch ``best_epoch_index`` picks (the run reports
    that epoch): the first lowest finite value, NaN never best, the last with ``keep_last``
    (a NaN first epoch once made the callback keep a worse later one)."""
    from types import SimpleNamespace

    from muscle.training.trainer import BestEpochCallback, best_epoch_index

    class Model:
        def save_pretrained(self, folder, **kw):
            Path(folder).mkdir(parents=True)

    def kept(vals: list[float], keep_last: bool = False) -> list[int]:
        cb = BestEpochCallback(tmp_path / "best", keep_last=keep_last)
        state = SimpleNamespace(log_history=[], global_step=0, is_world_process_zero=True)
        saved = []
        for n, v in enumerate(vals, start=1):
            state.global_step = n
            state.log_history.append({"eval_ce": v, "step": n})
            (tmp_path / "best").mkdir(exist_ok=True)
            (tmp_path / "best" / "epoch").write_text(str(n))
            cb.on_evaluate(None, state, SimpleNamespace(), metrics={"eval_ce": v}, model=Model())
            if not (tmp_path / "best" / "epoch").is_file():  # replaced: this epoch was kept
                saved.append(n)
        return saved

    nan = float("nan")
    for vals in ([nan, 1.0, 2.0], [2.0, nan, 1.0, 1.0], [1.0, 0.5, 0.7], [nan, nan]):
        best = best_epoch_index(vals)
        assert (kept(vals) or [None])[-1] == (None if best is None else best + 1), vals
        assert kept(vals, keep_last=True)[-1] == best_epoch_index(vals, keep_last=True) + 1
    assert best_epoch_index([]) is None and best_epoch_index([2.0, 1.0, 1.0]) == 1


def test_cut_examples_and_a_too_short_run_are_noted(base: Path, tmp_path: Path) -> None:
    """--max-length shorter than the examples, and a run of a handful of optimizer steps, are
    named in the run's warnings (both train, neither is an error)."""
    from muscle.models import load_tokenizer

    tok = load_tokenizer(str(base))
    task = ToyTask(20)
    lengths = [len(encode_doc(tok, task, d, "all", 10_000)["input_ids"]) for d in task.docs]
    cut_at = min(lengths) - 1  # every example loses a token
    res = train_task_adapter(
        _cfg(base, tmp_path / "o", max_length=cut_at, num_train_epochs=1,
             per_device_train_batch_size=16)
    )  # fmt: skip
    n_cut = sum(1 for n in lengths if n > cut_at)
    assert res["data"]["truncated"] == n_cut > 0
    assert f"{n_cut} of 20 examples were longer than --max-length {cut_at}" in res["warnings"][0]
    assert res["planned_steps"] == 1
    assert res["warnings"][1].startswith("only 1 optimizer step(s) in all (16 training docs")


def test_out_may_not_be_the_model_or_the_task_data(base: Path, tmp_path: Path) -> None:
    """--out on the base (an adapter written into it would be loaded with every later use of
    the bare base), on a spec's data file or over a file of --data: one line, nothing written
    (an --out that merely holds the spec and its data is fine: nothing read is written)."""
    import shutil

    copy = tmp_path / "basecopy"
    shutil.copytree(base, copy)
    files = sorted(p.name for p in copy.iterdir())
    with pytest.raises(MuscleError, match=r"--out .*basecopy: lies inside --model .*basecopy"):
        train_task_adapter(_cfg(copy, copy))
    assert sorted(p.name for p in copy.iterdir()) == files
    specs = tmp_path / "specs"
    specs.mkdir()
    rows = [{"q": f"q{i}", "choices": ["no", "yes"], "l": i % 2} for i in range(8)]
    (specs / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (specs / "qa.yaml").write_text(
        "name: qa\noutput_type: multiple_choice\ndata_files: {train: qa.jsonl}\n"
        "prompt: '{q}'\nchoices_field: choices\nlabel_field: l\n"
    )
    spec = str(specs / "qa.yaml")
    with pytest.raises(MuscleError, match="qa.jsonl: lies inside --task's train data file"):
        train_task_adapter(_cfg(base, specs / "qa.jsonl", task=spec))
    (specs / "training.json").write_text("{}")  # a data file named as a run's output
    with pytest.raises(MuscleError, match="specs: would write training.json over --data's"):
        train_task_adapter(_cfg(base, specs, task=spec, data=str(specs)))
    (specs / "training.json").unlink()
    assert sorted(p.name for p in specs.iterdir()) == ["qa.jsonl", "qa.yaml"]
