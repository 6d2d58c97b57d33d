"""``train_compat_adapter``: adapter sharing, teacher cache, resume, NaN stop, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from muscle.errors import MuscleError
from muscle.training import CompatTrainingConfig, train_compat_adapter
from muscle.training.diagnostics import run_warnings
from muscle.training.trainer import STUDENT, TEACHER_V2, NonFiniteLoss, StepLimitCallback
from test_train_toys import ToyTask, make_model, make_random_adapter, one_thread


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    b1 = make_model(root / "b1", seed=0)
    b2 = make_model(root / "b2", seed=1)
    return {
        "b1": b1,
        "b2": b2,
        "a1": make_random_adapter(b1, root / "a1", seed=10),
        "a2": make_random_adapter(b2, root / "a2", seed=20),
    }


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _cfg(pair: dict[str, Path], out: Path, **kw: Any) -> CompatTrainingConfig:
    defaults: dict[str, Any] = dict(
        old_model=str(pair["b1"]),
        old_adapter=str(pair["a1"]),
        new_model=str(pair["b2"]),
        new_adapter=str(pair["a2"]),
        task=ToyTask(20),
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        device="cpu",
        show_progress=False,
        seed=3,
    )
    defaults.update(kw)
    return CompatTrainingConfig(**defaults)


def _step_logs(res: dict) -> list[dict]:
    return [h for h in res["log_history"] if "loss" in h and "eval_loss" not in h]


class _Inspect(TrainerCallback):
    """Capture the teacher adapter's weights and the optimizer's parameters at the end."""

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        model, opt = kw["model"], kw["optimizer"]
        self.teacher = {
            n: p.detach().clone() for n, p in model.named_parameters() if f".{TEACHER_V2}." in n
        }
        self.teacher_requires_grad = [
            p.requires_grad for n, p in model.named_parameters() if f".{TEACHER_V2}." in n
        ]
        opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
        self.in_optimizer = {n for n, p in model.named_parameters() if id(p) in opt_ids}
        self.active = model.active_adapter


def test_student_starts_as_a2_and_teacher_stays_frozen(pair, tmp_path: Path) -> None:
    insp = _Inspect()
    # old-correct: the (random) v1 is mostly wrong, so most tokens are aligned to v2
    res = train_compat_adapter(_cfg(pair, tmp_path / "o", mask="old-correct"), callbacks=[insp])
    logs = _step_logs(res)
    assert all({"loss", "learning_rate", "kd_v1", "kd_v2", "aligned_v1"} <= h.keys() for h in logs)
    assert 0.0 < logs[0]["aligned_v1"] < 0.5
    # step 1: student == A2 == v2 teacher, so the v2 part of the loss is zero
    assert logs[0]["kd_v2"] == pytest.approx(0.0, abs=1e-7)
    assert logs[0]["kd_v1"] > 1e-4
    assert logs[0]["loss"] == pytest.approx(4.0 * logs[0]["kd_v1"], rel=1e-4)
    # later steps moved the student away from A2
    assert logs[-1]["kd_v2"] > 1e-5
    # the teacher adapter kept A2's weights, never required grad, never reached the optimizer
    a2 = load_file(pair["a2"] / "adapter_model.safetensors")
    assert len(insp.teacher) == len(a2) > 0
    for name, w in insp.teacher.items():
        key = name.replace(f".{TEACHER_V2}", "")
        assert torch.equal(w, a2[key]), name
    assert not any(insp.teacher_requires_grad)
    assert insp.in_optimizer and all(f".{STUDENT}." in n for n in insp.in_optimizer)
    assert insp.active == STUDENT
    # the saved compatibility adapter differs from A2 and holds only the student
    out = load_file(tmp_path / "o" / "adapter_model.safetensors")
    assert out.keys() == a2.keys()
    assert any(not torch.equal(out[k], a2[k]) for k in a2)
    assert not (tmp_path / "o" / TEACHER_V2).exists()
    cfg = json.loads((tmp_path / "o" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(pair["b2"])
    assert res["kind"] == "compat" and res["mask"] == "old-correct"


class _CountModels(TrainerCallback):
    """During training: causal LMs alive in the process and the student's adapters."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import gc

        from transformers import LlamaForCausalLM

        if state.global_step != 2:
            return
        gc.collect()
        self.n_models = sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())
        self.adapters = sorted(kw["model"].peft_config)


def test_teacher_cache_with_full_vocab_matches_live_teachers(pair, tmp_path: Path) -> None:
    from muscle.models import load_tokenizer

    vocab = len(load_tokenizer(str(pair["b2"])))
    seen_live, seen_cached = _CountModels(), _CountModels()
    live = train_compat_adapter(
        _cfg(pair, tmp_path / "live", num_train_epochs=1), callbacks=[seen_live]
    )
    cached = train_compat_adapter(
        _cfg(pair, tmp_path / "cache", num_train_epochs=1, cache_teachers=True, top_k=vocab),
        callbacks=[seen_cached],
    )
    assert cached["teacher_cache"]["built_now"] and cached["teacher_cache"]["top_k"] == vocab
    # only label positions are cached: with the loss on all tokens, every position but the
    # last of each 10-token example ("<s> Question : wA wB ? Answer : yes </s>")
    index = json.loads((tmp_path / "cache" / "teacher_cache" / "index.json").read_text())
    assert index["lengths"] == [9] * 20
    # live: v1 and the shared v2 base; cached: the v2 base only, without the teacher adapter
    assert (seen_live.n_models, seen_live.adapters) == (2, [STUDENT, TEACHER_V2])
    assert (seen_cached.n_models, seen_cached.adapters) == (1, [STUDENT])
    for a, b in zip(_step_logs(live), _step_logs(cached), strict=True):
        for k in ("loss", "kd_v1", "kd_v2", "aligned_v1"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    assert cached["epochs"][0]["val_loss"] == pytest.approx(live["epochs"][0]["val_loss"], rel=1e-4)
    # with the loss on the answer, its word and EOS only (hand count)
    answer = _cfg(pair, tmp_path / "ans", max_steps=1, cache_teachers=True, loss_on="answer")
    killed = tmp_path / "ans" / ".teacher_cache.k1ll3d_1"  # a killed build's, never renamed
    killed.mkdir(parents=True)
    (killed / "v1_logp.npy").write_bytes(b"partial")
    train_compat_adapter(answer)
    assert not killed.exists()
    index = json.loads((tmp_path / "ans" / "teacher_cache" / "index.json").read_text())
    assert index["lengths"] == [2] * 20 and index["total_tokens"] == 40
    # a small k only approximates
    approx = train_compat_adapter(
        _cfg(pair, tmp_path / "k4", num_train_epochs=1, cache_teachers=True, top_k=4)
    )
    assert _step_logs(approx)[0]["loss"] != pytest.approx(_step_logs(live)[0]["loss"], rel=1e-4)
    # the probability left to the tail bucket: none with the whole vocabulary, more with a
    # smaller k (and a warning), checked against the teachers' own softmax at T
    full, k4 = cached["teacher_cache"]["tail_mass"], approx["teacher_cache"]["tail_mass"]
    assert set(full) == set(k4) == {"v1", "v2"}
    assert all(v < 1e-5 for v in full.values()) and all(v > 0.05 for v in k4.values())
    assert not any("tail bucket" in w for w in cached["warnings"])
    assert any("tail bucket" in w and "raise --top-k" in w for w in approx["warnings"])
    one = train_compat_adapter(
        _cfg(pair, tmp_path / "k1", max_steps=1, cache_teachers=True, top_k=1)
    )["teacher_cache"]["tail_mass"]
    assert all(one[t] > k4[t] for t in one)  # fewer kept tokens, more in the tail
    for t in ("v1", "v2"):  # by hand from the full-vocabulary cache: softmax at T = 2, top 4
        logp = np.load(tmp_path / "cache" / "teacher_cache" / f"{t}_logp.npy")
        p = np.exp(logp / 2 - np.logaddexp.reduce(logp / 2, axis=-1, keepdims=True))
        assert k4[t] == pytest.approx(float(np.mean(1 - np.sort(p, -1)[:, -4:].sum(-1))), rel=1e-4)


def test_best_epoch_by_validation_ce_or_objective(pair, tmp_path: Path) -> None:
    # none: the objective is the CE, so the two validation figures coincide
    plain = train_compat_adapter(_cfg(pair, tmp_path / "n", mask="none", num_train_epochs=2))
    for e in plain["epochs"]:
        assert e["val_ce"] == pytest.approx(e["val_loss"], rel=1e-5)
    runs = {
        by: train_compat_adapter(
            _cfg(pair, tmp_path / by, num_train_epochs=4, learning_rate=3e-2, select_by=by)
        )
        for by in ("ce", "loss")
    }
    for by, res in runs.items():
        key = f"val_{by}"
        assert res["selected_by"].startswith(key)
        eps = res["epochs"]
        assert len(eps) == 4 and all("val_ce" in e and "val_loss" in e for e in eps)
        assert res["best_epoch"] == min(eps, key=lambda e: e[key])["epoch"]
    # per epoch: the share of training tokens aligned to v1, the mean of the step logs
    steps = _step_logs(runs["ce"])
    per_epoch = len(steps) // 4
    for i, e in enumerate(runs["ce"]["epochs"]):
        chunk = steps[i * per_epoch : (i + 1) * per_epoch]
        assert e["train_aligned_v1"] == pytest.approx(
            sum(h["aligned_v1"] for h in chunk) / len(chunk), rel=1e-6
        )
    assert "train_aligned_v1" not in plain["epochs"][0]
    # training.json carries the run's warnings, from its own epochs
    for res in (plain, *runs.values()):
        assert res["warnings"] == run_warnings("compat", res["mask"], res["epochs"])
    # the distillation objective and the CE are different figures
    assert any(abs(e["val_ce"] - e["val_loss"]) > 1e-3 for e in runs["ce"]["epochs"])
    with pytest.raises(MuscleError, match="--select-by 'acc': use 'ce', 'loss' or 'last'"):
        _cfg(pair, tmp_path / "x", select_by="acc").validate()


class _FinalStudent(TrainerCallback):
    """The student adapter's weights when training ends (before the best epoch is reloaded),
    named as in the saved adapter file."""

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self.weights = {
            k.replace(".default", ""): p.detach().clone()
            for k, p in model.named_parameters()
            if "lora_" in k and ".default." in k
        }


def test_select_by_last_keeps_the_final_epochs_adapter(pair, tmp_path: Path) -> None:
    final = _FinalStudent()
    cfg = _cfg(pair, tmp_path / "last", num_train_epochs=3, learning_rate=3e-2, select_by="last")
    res = train_compat_adapter(cfg, callbacks=[final])
    assert res["best_epoch"] == 3 and res["selected_by"].startswith("last epoch")
    saved = load_file(tmp_path / "last" / "adapter_model.safetensors")
    assert saved.keys() == final.weights.keys() and saved
    assert all(torch.equal(saved[k], final.weights[k]) for k in saved)


class _TeacherDtypes(TrainerCallback):
    """At step 1: the dtypes of the old-model teacher's weights and of the student's."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import gc

        from transformers import LlamaForCausalLM

        if state.global_step != 1:
            return
        student = kw["model"]
        models = [o for o in gc.get_objects() if isinstance(o, LlamaForCausalLM)]
        v1 = [m for m in models if m is not student.get_base_model()]
        self.v1 = {p.dtype for m in v1 for p in m.parameters()}
        self.student = {p.dtype for p in student.parameters() if p.requires_grad}


def test_bfloat16_teachers_halve_v1_and_track_float32_losses(pair, tmp_path: Path) -> None:
    seen = _TeacherDtypes()
    full = train_compat_adapter(_cfg(pair, tmp_path / "f32", num_train_epochs=1))
    half = train_compat_adapter(
        _cfg(pair, tmp_path / "bf16", num_train_epochs=1, teacher_dtype="bfloat16"),
        callbacks=[seen],
    )
    assert seen.v1 == {torch.bfloat16} and seen.student == {torch.float32}
    assert half["config"]["teacher_dtype"] == "bfloat16"
    a, b = _step_logs(full), _step_logs(half)
    # teachers rounded to bfloat16 move the KL a little, not the training
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=0.05)
    assert b[0]["loss"] != a[0]["loss"]
    assert b[0]["aligned_v1"] == a[0]["aligned_v1"]  # the mask is the student's own
    with pytest.raises(MuscleError, match="--teacher-dtype"):
        _cfg(pair, tmp_path / "x", teacher_dtype="int8").validate()


def test_resume_ends_where_an_uninterrupted_run_ends(pair, tmp_path: Path) -> None:
    kw = dict(num_train_epochs=3, save_steps=2, save_total_limit=None, cache_teachers=True)
    full = train_compat_adapter(_cfg(pair, tmp_path / "full", **kw))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_compat_adapter(_cfg(pair, out, **kw), callbacks=[StepLimitCallback(7)])
    assert not (out / "training.json").exists()
    assert not (out / "adapter_model.safetensors").exists()
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    assert not (out / "checkpoints" / "checkpoint-6" / TEACHER_V2).exists()
    with pytest.raises(MuscleError, match="--resume"):
        train_compat_adapter(_cfg(pair, out, **kw))
    resumed = train_compat_adapter(_cfg(pair, out, resume=True, **kw))
    assert resumed["teacher_cache"]["built_now"] is False
    assert resumed["total_steps"] == full["total_steps"] == 12
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert [round(h["loss"], 6) for h in _step_logs(full)] == [
        round(h["loss"], 6) for h in _step_logs(resumed)
    ]
    assert resumed["best_epoch"] == full["best_epoch"]
    for ea, eb in zip(full["epochs"], resumed["epochs"], strict=True):
        assert eb["val_loss"] == pytest.approx(ea["val_loss"], rel=1e-6)


class _KillOnSave(TrainerCallback):
    """Raise right after the checkpoint of ``step`` is saved (a kill at that moment)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated kill after checkpoint-{self.step}")


def test_a_run_killed_after_an_epochs_last_checkpoint_resumes_its_validation(
    pair, tmp_path: Path
) -> None:
    """A checkpoint at an epoch's last step holds that epoch's validation: resumed from it, the
    run reports every epoch's validation and keeps the adapter an uninterrupted run keeps (the
    checkpoint was saved before the validation, so the resumed run skipped that epoch's)."""
    kw = dict(num_train_epochs=3, save_steps=4, save_total_limit=None, learning_rate=5e-2)
    full = train_compat_adapter(_cfg(pair, tmp_path / "full", **kw))
    for step in (4, 12):  # the ends of epochs 1 and 3 (4 steps each)
        out = tmp_path / f"cut{step}"
        with pytest.raises(KeyboardInterrupt):
            train_compat_adapter(_cfg(pair, out, **kw), callbacks=[_KillOnSave(step)])
        state = json.loads(
            (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text()
        )
        assert any("eval_ce" in h and h["step"] == step for h in state["log_history"])
        resumed = train_compat_adapter(_cfg(pair, out, resume=True, **kw))
        assert [e["epoch"] for e in resumed["epochs"] if e.get("val_ce") is not None] == [1, 2, 3]
        for ea, eb in zip(full["epochs"], resumed["epochs"], strict=True):
            assert eb["val_ce"] == pytest.approx(ea["val_ce"], rel=1e-6)
        assert resumed["best_epoch"] == full["best_epoch"]
        a = load_file(tmp_path / "full" / "adapter_model.safetensors")
        b = load_file(out / "adapter_model.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), step


@pytest.mark.parametrize("val_fraction", [0.2, 0.0])
def test_a_run_killed_after_its_last_checkpoint_mid_epoch_resumes_to_its_end(
    pair, tmp_path: Path, val_fraction: float
) -> None:
    """--max-steps ending mid-epoch, killed right after its last step's checkpoint: the
    checkpoint holds the final validation, and the resumed run takes no step more (transformers
    would take one past --max-steps); with and without validation."""
    kw = dict(max_steps=6, save_steps=100, learning_rate=5e-2, val_fraction=val_fraction)
    full = train_compat_adapter(_cfg(pair, tmp_path / "full", **kw))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_compat_adapter(_cfg(pair, out, **kw), callbacks=[_KillOnSave(6)])
    resumed = train_compat_adapter(_cfg(pair, out, resume=True, **kw))
    assert resumed["total_steps"] == full["total_steps"] == 6
    assert [h["loss"] for h in _step_logs(resumed)] == [h["loss"] for h in _step_logs(full)]
    assert resumed["epochs"] == full["epochs"] and resumed["best_epoch"] == full["best_epoch"]
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


class _PoisonAfter(TrainerCallback):
    def __init__(self, step: int, all_params: bool) -> None:
        self.step = step
        self.all_params = all_params

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            with torch.no_grad():
                for p in kw["model"].parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
                        if not self.all_params:
                            break


@pytest.mark.parametrize("what,all_params", [("loss", True), ("gradient", False)])
def test_nan_stops_with_message_and_keeps_last_good_checkpoint(
    pair, tmp_path: Path, what: str, all_params: bool
) -> None:
    out = tmp_path / "nan"
    cfg = _cfg(pair, out, save_steps=2, mask="old-all")
    with pytest.raises(NonFiniteLoss, match=rf"non-finite {what}.* step 4 .*checkpoint-2\b"):
        train_compat_adapter(cfg, callbacks=[_PoisonAfter(3, all_params)])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert not (out / "checkpoints" / "checkpoint-4").exists()
    assert not (out / "training.json").exists()
    w = load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_tokenizer_mismatch_is_one_clear_error(pair, tmp_path: Path) -> None:
    other = make_model(tmp_path / "other", seed=5, extra=["zz", "yy"])
    with pytest.raises(MuscleError, match=r"tokenizers differ .*id \d+: None vs 'zz'|'zz'"):
        train_compat_adapter(_cfg(pair, tmp_path / "o", old_model=str(other), old_adapter=None))


@pytest.mark.parametrize("which", ["old_adapter", "new_adapter"])
def test_a_missing_adapter_is_one_clear_error(pair, tmp_path: Path, which: str) -> None:
    option = "--" + which.replace("_", "-")
    with pytest.raises(MuscleError, match=rf"^{option} .*nope: adapter folder not found"):
        train_compat_adapter(_cfg(pair, tmp_path / "o", **{which: str(tmp_path / "nope")}))
    assert not (tmp_path / "o").exists()


def test_bases_whose_output_layers_differ_in_padding_train_alike(pair, tmp_path: Path) -> None:
    """Same tokenizer, one base's output layer padded with more rows (Qwen2.5 3B -> 7B): the
    old teacher is read over the student's ids.  Its padding rows dropped, the run equals the
    unpadded one step for step (live and cached teachers); padded on the new side instead, the
    old teacher gives the extra ids no probability and the losses stay finite."""
    import math
    import shutil

    from transformers import AutoModelForCausalLM

    def padded(name: str) -> str:
        folder = tmp_path / f"{name}_padded"
        shutil.copytree(pair[name], folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.resize_token_embeddings(model.config.vocab_size + 8)
        model.save_pretrained(folder)
        return str(folder)

    old = padded("b1")
    for cache in (False, True):
        kw = dict(num_train_epochs=1, old_adapter=None, cache_teachers=cache)
        plain = train_compat_adapter(_cfg(pair, tmp_path / f"plain{cache}", **kw))
        wide = train_compat_adapter(_cfg(pair, tmp_path / f"wide{cache}", old_model=old, **kw))
        for a, b in zip(_step_logs(plain), _step_logs(wide), strict=True):
            for k in ("loss", "kd_v1", "kd_v2", "aligned_v1"):
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (cache, k)
    res = train_compat_adapter(
        _cfg(pair, tmp_path / "narrow", new_model=padded("b2"), num_train_epochs=1, mask="old-all")
    )
    steps = _step_logs(res)
    assert steps and all(math.isfinite(h["loss"]) and h["kd_v1"] >= 0 for h in steps)


def test_fit_width_drops_or_adds_ids_without_probability() -> None:
    """A wider teacher's extra ids are dropped; a narrower one's missing ids get probability 0
    (in float32 and bfloat16, at T = 1 and 2), and KL terms over them stay 0, not NaN."""
    from muscle.logits import fit_width

    torch.manual_seed(0)
    logits = torch.randn(5, 12) * 30
    assert torch.equal(fit_width(logits, 9), logits[:, :9])
    assert fit_width(logits, 12) is not None and torch.equal(fit_width(logits, 12), logits)
    for dtype in (torch.float32, torch.bfloat16):
        wide = fit_width(logits.to(dtype), 16)
        assert wide.shape == (5, 16) and torch.isfinite(wide).all()
        assert torch.equal(wide[:, :12], logits.to(dtype))
        for t in (1.0, 2.0):
            p = torch.softmax(wide.float() / t, -1)
            assert torch.equal(p[:, 12:], torch.zeros(5, 4))
            logp = torch.log_softmax(wide.float() / t, -1)
            kl = (p * (logp - torch.log_softmax(torch.randn(5, 16), -1))).sum(-1)
            assert torch.isfinite(kl).all()


def test_pickled_adapter_is_refused(pair, tmp_path: Path) -> None:
    """safetensors only: an adapter saved as adapter_model.bin is refused, not unpickled."""
    import shutil

    from safetensors.torch import load_file

    ad = tmp_path / "ad"
    shutil.copytree(pair["a2"], ad)
    torch.save(load_file(ad / "adapter_model.safetensors"), ad / "adapter_model.bin")
    (ad / "adapter_model.safetensors").unlink()
    with pytest.raises(MuscleError, match=r"^--new-adapter .*pickle files \(adapter_model.bin\)"):
        train_compat_adapter(_cfg(pair, tmp_path / "o", new_adapter=str(ad)))
    assert not (tmp_path / "o").exists()


def test_base_rewritten_in_place_changes_its_identity(pair, tmp_path: Path) -> None:
    """The teacher cache's key holds each base's fingerprint: rewriting the weights at the same
    size (a base retrained in place) must change it, an untouched copy's must not."""
    import os
    import shutil

    from muscle.training.api import _model_identity

    base = shutil.copytree(pair["b1"], tmp_path / "b", copy_function=shutil.copy2)
    before = _model_identity(str(base))["fingerprint"]
    assert _model_identity(str(base))["fingerprint"] == before
    weights = next(base.glob("*.safetensors"))
    data, st = weights.read_bytes(), weights.stat()
    weights.write_bytes(data)  # same bytes, same size, written anew
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert weights.stat().st_size == st.st_size
    assert _model_identity(str(base))["fingerprint"] != before


def test_config_errors() -> None:
    base = dict(task="t", output_dir="o", new_model="n", new_adapter="a", old_model="m")
    with pytest.raises(MuscleError, match="--mask"):
        CompatTrainingConfig(**base, mask="bogus").validate()
    with pytest.raises(MuscleError, match="ce-weight"):
        CompatTrainingConfig(**base, mask="none", ce_weight=0.5).validate()
    with pytest.raises(MuscleError, match="ce-weight"):
        CompatTrainingConfig(**base, ce_weight=1.5).validate()
    with pytest.raises(MuscleError, match="--old-model"):
        CompatTrainingConfig(**{**base, "old_model": ""}).validate()
    CompatTrainingConfig(**{**base, "old_model": ""}, mask="none").validate()
    with pytest.raises(MuscleError, match="ensemble .* drop --cache-teachers"):
        CompatTrainingConfig(**base, mask="ensemble", cache_teachers=True).validate()
    with pytest.raises(MuscleError, match="--top-k 16 sets .* add --cache-teachers"):
        CompatTrainingConfig(**base, top_k=16).validate()  # live teachers: it changes nothing
    CompatTrainingConfig(**base, top_k=16, cache_teachers=True).validate()


def test_ensemble_objective_distils_the_mean_of_both_teachers(pair, tmp_path: Path) -> None:
    """``--mask ensemble``: the first step's loss is T² · KL(ensemble ‖ student), the student
    starting as A2; checked against the same loss computed from the two teachers' logits."""
    from muscle.models import load_model
    from muscle.training.data import Collator, encode_docs, split_docs
    from muscle.training.losses import compat_loss

    cfg = _cfg(pair, tmp_path / "ens", mask="ensemble", max_steps=1, per_device_train_batch_size=16)
    res = train_compat_adapter(cfg)
    first = _step_logs(res)[0]
    assert {"kd_ensemble", "loss"} <= first.keys() and "aligned_v1" not in first
    assert first["loss"] == pytest.approx(4.0 * first["kd_ensemble"], rel=1e-4)
    # the same batch by hand: the trainer's seeded order of the 16 training docs (one step)
    m1, tok = load_model(str(pair["b1"]), str(pair["a1"]), device="cpu", dtype="float32")
    m2, _ = load_model(str(pair["b2"]), str(pair["a2"]), device="cpu", dtype="float32")
    train, _ = split_docs(ToyTask(20).load_docs(), 0.2, 3)
    batch = Collator(tok.pad_token_id)(list(encode_docs(tok, ToyTask(20), train, "all", 512)))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        z1, z2 = m1(**inputs).logits, m2(**inputs).logits
    ref = compat_loss(z2, batch["labels"], v1=z1, v2=z2, mask="ensemble")
    # the KL does not depend on the order of the examples, only on which 16 they are
    assert first["kd_ensemble"] == pytest.approx(ref.terms["kd_ensemble"].item(), rel=1e-3)
    assert ref.terms["kd_ensemble"].item() > 1e-3  # the teachers differ: something to learn


def test_cli_train_compat_and_error_line(pair, tmp_path: Path, capsys, monkeypatch) -> None:
    import muscle.tasks
    from muscle.cli import main

    # registered for this test only (other tests list the registry)
    monkeypatch.setitem(muscle.tasks._REGISTRY, "toy-pairs", ToyTask)
    common = [
        "--new-model",
        str(pair["b2"]),
        "--new-adapter",
        str(pair["a2"]),
        "--task",
        "toy-pairs",
        "--device",
        "cpu",
        "--no-progress",
    ]
    out = tmp_path / "cli"
    main(
        [
            "train",
            "compat",
            *common,
            "--old-model",
            str(pair["b1"]),
            "--old-adapter",
            str(pair["a1"]),
            "--out",
            str(out),
            "--mask",
            "old-correct",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--grad-accum",
            "1",
            "--ce-weight",
            "0.5",
        ]
    )
    res = json.loads((out / "training.json").read_text())
    assert res["config"]["mask"] == "old-correct" and res["config"]["ce_weight"] == 0.5
    assert res["total_steps"] == 4  # 32 docs → 26 train → 4 batches of 8
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", "compat", *common, "--out", str(tmp_path / "e"), "--mask", "focal"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--old-model" in err and "\n" not in err


def test_report_to_tensorboard_writes_events_under_out(pair, tmp_path: Path) -> None:
    out = tmp_path / "tb"
    train_compat_adapter(_cfg(pair, out, num_train_epochs=1, report_to="tensorboard"))
    assert list((out / "logs").glob("events.out.tfevents.*"))
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(MuscleError, match="report-to wandb: the wandb package is not"):
            train_compat_adapter(_cfg(pair, tmp_path / "x", report_to="wandb"))
    assert not (tmp_path / "x" / "training.json").exists()


def test_logits_at_label_positions_only_train_as_full_logits(pair, tmp_path, monkeypatch) -> None:
    """The student and both live teachers compute logits at the label positions only (the
    model applies ``logits_to_keep``); the run matches one with full ``(B, L, V)`` logits."""
    import muscle.logits as logits_mod
    import muscle.training.trainer as trainer_mod

    dims: list[int] = []
    real = logits_mod.packed_logits

    def spy(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        dims.append(logits.dim())
        return real(logits, keep)

    for mod in (logits_mod, trainer_mod):  # the teachers' path, the student's
        monkeypatch.setattr(mod, "packed_logits", spy)
    packed = train_compat_adapter(_cfg(pair, tmp_path / "packed", num_train_epochs=1))
    assert dims and set(dims) == {2}  # student, v1 and v2 teachers: (N, V) from the model
    dims.clear()
    monkeypatch.setattr(logits_mod, "keeps_logits", lambda model: False)
    full = train_compat_adapter(_cfg(pair, tmp_path / "full", num_train_epochs=1))
    assert dims and set(dims) == {3}
    for a, b in zip(_step_logs(full), _step_logs(packed), strict=True):
        for k in ("loss", "kd_v1", "kd_v2", "aligned_v1"):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
    assert packed["epochs"][0]["val_ce"] == pytest.approx(full["epochs"][0]["val_ce"], rel=1e-5)


def test_old_model_without_adapter_is_noted(pair, tmp_path: Path) -> None:
    """M1 = --old-model alone is legitimate (a fully fine-tuned M1) but easy to get by
    mistake: the run's warnings say so; with --old-adapter, or a mask without v1, they don't."""
    note = "no --old-adapter: the old task model M1 was --old-model"
    bare = train_compat_adapter(_cfg(pair, tmp_path / "a", old_adapter=None, num_train_epochs=1))
    assert any(w.startswith(note) for w in bare["warnings"])
    assert (
        json.loads((tmp_path / "a" / "training.json").read_text())["warnings"] == bare["warnings"]
    )
    full = train_compat_adapter(_cfg(pair, tmp_path / "b", num_train_epochs=1))
    assert not any(w.startswith(note) for w in full["warnings"])
    plain = _cfg(pair, tmp_path / "c", old_adapter=None, num_train_epochs=1, mask="none")
    assert not any(w.startswith(note) for w in train_compat_adapter(plain)["warnings"])
    assert not any("--cache-teachers" in w for w in full["warnings"])


def test_a_teacher_cache_without_teachers_is_noted(pair, tmp_path: Path) -> None:
    """--cache-teachers with --mask none (no teacher to cache) says so instead of nothing."""
    cfg = _cfg(pair, tmp_path / "n", num_train_epochs=1, mask="none", cache_teachers=True)
    warnings = train_compat_adapter(cfg)["warnings"]
    assert "--cache-teachers: --mask none uses no teacher, so nothing was cached" in warnings
    assert not (tmp_path / "n" / "teacher_cache").exists()


def test_a_start_trained_on_other_terms_is_noted(pair, tmp_path: Path) -> None:
    """The new task adapter's training.json is read: another --loss-on, or another --seed (a
    validation split holding its training docs), is named in the run's warnings."""
    from muscle.training import TaskTrainingConfig, train_task_adapter

    a2 = tmp_path / "a2"
    train_task_adapter(
        TaskTrainingConfig(
            model=str(pair["b2"]), task=ToyTask(20), output_dir=str(a2), lora_r=4, lora_alpha=8,
            num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=1,
            device="cpu", show_progress=False, seed=3, loss_on="answer",
        )
    )  # fmt: skip
    same = train_compat_adapter(
        _cfg(pair, tmp_path / "same", new_adapter=str(a2), num_train_epochs=1, loss_on="answer")
    )
    assert not [w for w in same["warnings"] if "--loss-on" in w or "validation split" in w]
    other = train_compat_adapter(
        _cfg(pair, tmp_path / "other", new_adapter=str(a2), num_train_epochs=1, seed=4)
    )
    notes = other["warnings"]
    assert any(
        w.startswith("--loss-on all, but the new task adapter was trained with") for w in notes
    )
    assert any(
        w.startswith("the validation split differs from the new task adapter's") for w in notes
    )


def test_out_may_not_be_an_input(pair, tmp_path: Path) -> None:
    """--out on the starting adapter (a copy without training.json, which the finished-run
    check does not see), inside the old adapter: one line, nothing written."""
    import shutil

    a2x = tmp_path / "a2x"
    shutil.copytree(pair["a2"], a2x)
    before = {p.name: p.read_bytes() for p in a2x.iterdir()}
    assert "training.json" not in before
    cases = [
        (a2x, dict(new_adapter=str(a2x)), "a2x: lies inside --new-adapter .*a2x, which it would"),
        (pair["a1"] / "sub", {}, "sub: lies inside --old-adapter .*a1, which it would change"),
    ]
    for out, change, message in cases:
        with pytest.raises(MuscleError, match=message):
            train_compat_adapter(_cfg(pair, out, **change))
    assert {p.name: p.read_bytes() for p in a2x.iterdir()} == before
    assert not (pair["a1"] / "sub").exists()
    assert not (pair["b1"].parent / "run_options.json").exists()


def test_a_new_adapter_training_biases_is_one_line(pair, tmp_path: Path) -> None:
    """PEFT holds one bias-training adapter per model, so the v2 teacher copy cannot be made
    (a traceback before); masks without a v2 teacher are named."""
    import shutil

    a2b = tmp_path / "a2b"
    shutil.copytree(pair["a2"], a2b)
    cfg_path = a2b / "adapter_config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "bias": "all"}))
    with pytest.raises(MuscleError, match=r"trains biases \(bias='all'\).*--mask old-all or none"):
        train_compat_adapter(_cfg(pair, tmp_path / "c", new_adapter=str(a2b), max_steps=1))
    assert not (tmp_path / "c" / "training.json").exists()
