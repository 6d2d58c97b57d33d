"""``train_task_adapter`` and ``train_compat_adapter``: set-up around :class:`MuscleTrainer`.

Output folder layout::

    OUT/adapter_config.json, adapter_model.safetensors   the adapter of the best epoch
    OUT/training.json                                    config, data hash, per-epoch losses, ...
    OUT/run_options.json                                 the options the run started with
    OUT/checkpoints/checkpoint-N/                        every --save-steps optimizer steps
    OUT/best/                                            best adapter so far (during training)
    OUT/teacher_cache/                                   compat --cache-teachers only
    OUT/logs/                                            --report-to tensorboard

``training.json`` is written last: its presence means a finished run.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from muscle import __version__
from muscle.distributed import process_state, world_size
from muscle.errors import MuscleError
from muscle.io import SCHEMA_VERSION, check_out_apart, make_dir, sha256_dir, write_json
from muscle.training.config import CompatTrainingConfig, TaskTrainingConfig, _BaseTrainingConfig
from muscle.training.data import (
    Collator,
    docs_hash,
    encode_docs,
    load_docs,
    resolve_task,
    split_docs,
)
from muscle.training.diagnostics import lr_at_stop, run_warnings


def train_task_adapter(cfg: TaskTrainingConfig, *, callbacks: list[Any] | None = None) -> dict:
    """Train a LoRA task adapter on ``cfg.model``; returns the ``training.json`` content."""
    cfg.validate()
    from muscle.models import progress_bars

    with _out_folder(cfg) as out, progress_bars(cfg.show_progress):
        return _train_task_adapter(cfg, out, callbacks)


def _train_task_adapter(cfg: TaskTrainingConfig, out: Path, callbacks: list[Any] | None) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    from muscle.models import load_base_model, load_tokenizer, loading, peft_wrapping

    task = resolve_task(cfg.task)
    with loading("--model", cfg.model):
        tok = load_tokenizer(cfg.model)
    data = _data(cfg, task, tok)
    dtype = _dtype(cfg)
    with loading("--model", cfg.model):
        base = load_base_model(cfg.model, dtype=dtype, device="cpu")
    set_seed(cfg.seed)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        with peft_wrapping():
            model = get_peft_model(base, lora)
    except ValueError as exc:  # e.g. no module matches --target-modules
        first = str(exc).strip().splitlines()[0].rstrip(".")
        raise MuscleError(
            f"--target-modules {cfg.target_modules}: {first[:200]}; the base's linear layers: "
            f"{', '.join(_linear_names(base))}"
        ) from None
    models = {"model": _model_identity(cfg.model)}
    return _train(cfg, out, task, tok, data, model, models=models, callbacks=callbacks)


def train_compat_adapter(cfg: CompatTrainingConfig, *, callbacks: list[Any] | None = None) -> dict:
    """Train the MUSCLE compatibility adapter; returns the ``training.json`` content."""
    cfg.validate()
    from muscle.models import progress_bars

    with _out_folder(cfg) as out, progress_bars(cfg.show_progress):
        return _train_compat_adapter(cfg, out, callbacks)


def _train_compat_adapter(
    cfg: CompatTrainingConfig, out: Path, callbacks: list[Any] | None
) -> dict:
    import torch

    from muscle.logits import fit_width, logits_at
    from muscle.models import (
        adapter_config,
        attach_adapter,
        check_tokenizers_match,
        load_base_model,
        load_tokenizer,
        loading,
    )
    from muscle.training.cache import LAYOUT, TeacherCache
    from muscle.training.losses import needs_teachers
    from muscle.training.trainer import STUDENT, TEACHER_V2

    task = resolve_task(cfg.task)
    with loading("--new-model", cfg.new_model):
        tok = load_tokenizer(cfg.new_model)
    if cfg.old_model:
        with loading("--old-model", cfg.old_model):
            old_tok = load_tokenizer(cfg.old_model)
        check_tokenizers_match(old_tok, tok)
    data = _data(cfg, task, tok)
    dtype = _dtype(cfg)
    need_v1, need_v2 = needs_teachers(cfg.mask)
    device = _train_device(cfg)

    models = {
        "old_model": _model_identity(cfg.old_model) if cfg.old_model else None,
        "old_adapter": _adapter_identity(cfg.old_adapter, "--old-adapter"),
        "new_model": _model_identity(cfg.new_model),
        "new_adapter": _adapter_identity(cfg.new_adapter, "--new-adapter"),
    }

    # One copy of base v2: the student ("default", trainable copy of A2) and, when needed, the
    # frozen v2 teacher (a second copy of A2 under another adapter name).
    bias = str(adapter_config(cfg.new_adapter, "--new-adapter").get("bias", "none"))
    if need_v2 and bias != "none":  # PEFT holds one such adapter per model: no teacher copy
        raise MuscleError(
            f"--new-adapter {cfg.new_adapter}: trains biases (bias={bias!r}), which the v2 "
            f"teacher would share with the student under --mask {cfg.mask}; retrain it with "
            "bias='none', or use --mask old-all or none (no v2 teacher)"
        )
    with loading("--new-model", cfg.new_model):
        base2 = load_base_model(cfg.new_model, dtype=dtype, device="cpu")
    # the v1 teacher's logits are read over the student's ids (output layers may differ in
    # padding rows: the tokenizers match)
    width = base2.get_output_embeddings().weight.shape[0]
    model = attach_adapter(base2, cfg.new_adapter, adapter_name=STUDENT, trainable=True)
    if need_v2:
        model.load_adapter(cfg.new_adapter, adapter_name=TEACHER_V2, is_trainable=False)
        model.set_adapter(STUDENT)

    teacher_dtype = _teacher_dtype(cfg)
    # v2 teacher: autocast when its precision differs from the student's (they share weights)
    v2_autocast = None if teacher_dtype == dtype else getattr(torch, teacher_dtype)

    def load_v1() -> Any:
        with loading("--old-model", cfg.old_model):
            v1 = load_base_model(cfg.old_model, dtype=dtype, device="cpu")
        if cfg.old_adapter:
            v1 = attach_adapter(v1, cfg.old_adapter).merge_and_unload()
        v1 = v1.to(device=device, dtype=getattr(torch, teacher_dtype)).eval()
        v1.requires_grad_(False)
        return v1

    cache_info = None
    cache = None
    v1_model = None
    if cfg.cache_teachers and cfg.mask != "none":
        names = [n for n, need in (("v1", need_v1), ("v2", need_v2)) if need]
        rows = data["train"].rows + data["val"].rows
        key = hashlib.sha256(
            json.dumps(
                {
                    "models": models,
                    "names": names,
                    "k": cfg.top_k,
                    "temperature": cfg.temperature,
                    "data": [data["train"].fingerprint(), data["val"].fingerprint()],
                    "dtype": dtype,
                    "teacher_dtype": teacher_dtype,
                    "layout": LAYOUT,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        folder = out / "teacher_cache"
        t0 = time.perf_counter()
        built = False
        # the main process builds the cache; the others wait, then open it
        with process_state(cfg.device).main_process_first():
            cache = TeacherCache.open(folder, key)
            if cache is None:
                fns: dict[str, Any] = {}
                if need_v1:
                    v1_model = load_v1()
                    fns["v1"] = lambda x, keep: fit_width(logits_at(v1_model, x, keep), width)
                if need_v2:
                    model.to(device)
                    fns["v2"] = _v2_teacher_fn(model, device, v2_autocast)
                cache = TeacherCache.build(
                    folder,
                    key,
                    rows,
                    {n: fns[n] for n in names},
                    k=cfg.top_k,
                    temperature=cfg.temperature,
                    batch_size=cfg.per_device_eval_batch_size or cfg.per_device_train_batch_size,
                    pad_token_id=tok.pad_token_id,
                    device=device,
                    show_progress=cfg.show_progress,
                )
                built = True
        # Later epochs need neither the v1 base in memory nor the v2 teacher adapter.
        v1_model = None
        if need_v2:
            model.delete_adapter(TEACHER_V2)
            model.set_adapter(STUDENT)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        cache_info = {
            "folder": str(folder),
            "key": key,
            "teachers": names,
            "top_k": cache.k,
            "built_now": built,
            "seconds": round(time.perf_counter() - t0, 3),
            "approximation": "top-k plus a tail bucket at the training temperature "
            "(a lower bound of the KL; exact when k = vocab)",
            "tail_mass": cache.tail_mass,
        }
    elif need_v1:
        v1_model = load_v1()

    loss_kwargs = {
        "temperature": cfg.temperature,
        "ce_weight": cfg.ce_weight,
        "kl_t2_scale": cfg.kl_t2_scale,
        "focal_alpha": cfg.focal_alpha,
        "focal_beta": cfg.focal_beta,
    }
    v2_live = need_v2 and cache is None
    return _train(
        cfg,
        out,
        task,
        tok,
        data,
        model,
        models=models,
        callbacks=callbacks,
        mask=cfg.mask,
        loss_kwargs=loss_kwargs,
        v1_model=v1_model,
        v1_width=width,
        v2_live=v2_live,
        cache=cache,
        cache_info=cache_info,
        teacher_autocast=v2_autocast,
    )


# --- shared set-up -------------------------------------------------------------------------
_SELECTED_BY = {
    "ce": "val_ce (validation cross-entropy of the student)",
    "loss": "val_loss (validation value of the training objective)",
    "last": "last epoch (--select-by last)",
}


# The options a run started with (``OUT/run_options.json``): ``--resume`` refuses others.
RUN_OPTIONS = "run_options.json"
# Options a resumed run may change: they change logging, saving or placement, not the result.
_RESUMABLE = {
    "resume",
    "show_progress",
    "report_to",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "per_device_eval_batch_size",
    "device",
    "output_dir",
}


@contextlib.contextmanager
def _out_folder(cfg: _BaseTrainingConfig) -> Iterator[Path]:
    """The checked output folder; one this run created is removed again if the run fails
    before writing anything into it (a wrong --model leaves no empty --out behind)."""
    created = not Path(cfg.output_dir).exists()
    out = _prepare_out(cfg)
    try:
        yield out
    except BaseException:
        if not any((out / "checkpoints").glob("checkpoint-*")):  # nothing to resume from
            (out / RUN_OPTIONS).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):  # not empty, or another process removed it
                    out.rmdir()
        raise


def _options_changed(cfg: _BaseTrainingConfig, out: Path) -> list[str]:
    """``--flag old -> new`` for each option that differs from the run being resumed (none
    when the run predates ``run_options.json``)."""
    from muscle.training.config import _flag

    path = out / RUN_OPTIONS
    if not path.is_file():
        return []
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        before = run["config"]
    except (OSError, ValueError, KeyError):
        raise MuscleError(f"{path}: unreadable; delete --out {out} and start over") from None
    now = json.loads(json.dumps(cfg.to_dict(), default=str))
    changed = [
        f"{_flag(k)} {before.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if k not in _RESUMABLE and before.get(k) != v
    ]
    if run.get("world_size", world_size()) != world_size():  # the global batch would change
        changed.append(f"processes {run['world_size']} -> {world_size()}")
    return changed


def _prepare_out(cfg: _BaseTrainingConfig) -> Path:
    out = Path(cfg.output_dir)
    check_out_apart(out, _inputs(cfg), writes=[out / name for name in _WRITES])
    if out.exists() and not out.is_dir():
        raise MuscleError(f"--out {out}: exists and is not a folder")
    if (out / "training.json").is_file():  # --resume too: it continues interrupted runs only
        raise MuscleError(
            f"--out {out}: already holds a finished run (training.json); "
            "choose another folder or delete it"
        )
    has_ckpt = any((out / "checkpoints").glob("checkpoint-*"))
    if has_ckpt and not cfg.resume:
        raise MuscleError(
            f"--out {out}: holds checkpoints of an earlier run; pass --resume to continue it "
            "or choose another folder"
        )
    if cfg.resume:
        if not has_ckpt:
            raise MuscleError(
                f"--resume: no checkpoint found in {out / 'checkpoints'}; run without --resume"
            )
        from muscle.training.trainer import last_complete_checkpoint

        if last_complete_checkpoint(out / "checkpoints") is None:
            raise MuscleError(
                f"--resume: no complete checkpoint in {out / 'checkpoints'} (each lacks its "
                "trainer_state.json: interrupted while saving); delete it and start over"
            )
        changed = _options_changed(cfg, out)
        if changed:
            raise MuscleError(
                f"--resume: {out} was started with other options ({'; '.join(changed)}); "
                "resume with the same options or choose another --out"
            )
    make_dir(out, "--out")
    if not cfg.resume:
        options = {"config": cfg.to_dict(), "world_size": world_size()}
        write_json(out / RUN_OPTIONS, {"schema_version": SCHEMA_VERSION, **options})
    return out


# What a run writes into --out (the tokenizer's files too): none of it may be an input.
_WRITES = (
    "training.json", "run_options.json", "adapter_config.json", "adapter_model.safetensors",
    "checkpoints", "best", "teacher_cache", "runs", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja",
)  # fmt: skip


def _inputs(cfg: _BaseTrainingConfig) -> dict[str, Any]:
    """The run's local inputs by option: models, adapters, the task spec and its data."""
    from muscle.evaluation.runner import task_inputs

    names = ("model", "old_model", "old_adapter", "new_model", "new_adapter")
    models = {f"--{n.replace('_', '-')}": getattr(cfg, n) for n in names if hasattr(cfg, n)}
    return {**models, **task_inputs(resolve_task(cfg.task), cfg.data)}


def _dtype(cfg: _BaseTrainingConfig) -> str:
    from muscle.models import resolve_dtype

    dt = resolve_dtype(cfg.dtype, _train_device(cfg))
    return str(dt).replace("torch.", "")


def _teacher_dtype(cfg: CompatTrainingConfig) -> str:
    """The teachers' precision: ``--teacher-dtype`` or else the training dtype."""
    if cfg.teacher_dtype is None:
        return _dtype(cfg)
    from muscle.models import resolve_dtype

    return str(resolve_dtype(cfg.teacher_dtype, _train_device(cfg))).replace("torch.", "")


def _train_device(cfg: _BaseTrainingConfig) -> Any:
    """The device this process trains on (under torchrun/accelerate: its local device)."""
    from muscle.models import resolve_device

    if resolve_device(cfg.device).type == "cpu":
        return resolve_device("cpu")
    return process_state(cfg.device).device


def _data(cfg: _BaseTrainingConfig, task: Any, tok: Any) -> dict[str, Any]:
    if tok.eos_token_id is None:
        raise MuscleError(
            f"{tok.name_or_path}: the tokenizer has no EOS token, which ends every training "
            "answer; set eos_token in its tokenizer_config.json"
        )
    docs = load_docs(task, cfg.data, cfg.split, cfg.limit)
    train_docs, val_docs = split_docs(docs, cfg.val_fraction, cfg.seed)
    train = encode_docs(tok, task, train_docs, cfg.loss_on, cfg.max_length)
    val = encode_docs(tok, task, val_docs, cfg.loss_on, cfg.max_length, offset=len(train))
    if train.n_label_tokens() == 0:
        raise MuscleError(f"task {task.name}: no label tokens in the training data")
    return {
        "train": train,
        "val": val,
        "info": {
            "source": cfg.data,
            "split": cfg.split,
            "n_docs": len(docs),
            "n_train": len(train_docs),
            "n_val": len(val_docs),
            "hash": docs_hash(docs),
            "val_ids_hash": docs_hash([{"id": task.doc_id(d)} for d in val_docs]),
            "train_label_tokens": train.n_label_tokens(),
            "truncated": train.n_truncated + val.n_truncated,
            "answer_cut": train.n_answer_cut + val.n_answer_cut,
        },
    }


def _model_identity(path: str) -> dict[str, Any]:
    """Path and a cheap fingerprint of a base (hashing a 7B model's weights takes minutes):
    its ``config.json`` and the name, size and modification time of each weight file, so a
    base rewritten in place invalidates a teacher cache."""
    p = Path(path)
    ident: dict[str, Any] = {"path": str(path)}
    if (p / "config.json").is_file():
        h = hashlib.sha256((p / "config.json").read_bytes())
        for f in sorted(p.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        ident["fingerprint"] = h.hexdigest()
    return ident


def _adapter_identity(path: str | None, option: str) -> dict[str, Any] | None:
    from muscle.models import check_adapter

    if not path:
        return None
    return {"path": str(path), "sha256": sha256_dir(check_adapter(path, option))}


def _data_notes(cfg: _BaseTrainingConfig, info: dict[str, Any], planned: int) -> list[str]:
    """Examples cut to --max-length, and a run too short to learn much."""
    notes = []
    if info.get("truncated"):
        answers = info.get("answer_cut", 0)
        notes.append(
            f"{info['truncated']} of {info['n_train'] + info['n_val']} examples were longer "
            f"than --max-length {cfg.max_length} and were cut: the prompt's beginning"
            + (
                f"; {answers} answer(s) longer than half of it also lost their end (and EOS)"
                if answers
                else ""
            )
        )
    if planned < 5:
        notes.append(
            f"only {planned} optimizer step(s) in all ({info['n_train']} training docs, "
            f"--batch-size {cfg.per_device_train_batch_size} x --grad-accum "
            f"{cfg.gradient_accumulation_steps} per step): lower them or raise --epochs"
        )
    return notes


TAIL_MASS_WARN = 0.05  # mean teacher probability outside the cached top k


def _cache_notes(cache_info: dict[str, Any] | None, cfg: _BaseTrainingConfig) -> list[str]:
    """A teacher cache whose top k leaves much probability to the tail bucket: the loss and
    its gradient are then far from the live teachers' (flat teachers, a small --top-k)."""
    if not cache_info:
        return []
    tails = cache_info.get("tail_mass") or {}
    worst = max(tails.items(), key=lambda kv: kv[1], default=None)
    if worst is None or worst[1] <= TAIL_MASS_WARN:
        return []
    return [
        f"the teacher cache's top {cache_info['top_k']} leave {100 * worst[1]:.0f} % of teacher "
        f"{worst[0]}'s probability (at T = {getattr(cfg, 'temperature', 1.0):g}) to one tail "
        "bucket: the distillation differs from live teachers; raise --top-k or train without "
        "--cache-teachers"
    ]


def _compat_notes(cfg: _BaseTrainingConfig, mask: str, data_info: dict[str, Any]) -> list[str]:
    """What a compatibility run should know about its teachers and its start: a teacher cache
    asked of a run without teachers, an old teacher that is a base without adapter, and a new
    task adapter trained on other terms (read from its ``training.json``, where there is one)."""
    from muscle.training.losses import needs_teachers

    if not isinstance(cfg, CompatTrainingConfig):
        return []
    notes = []
    if cfg.cache_teachers and not any(needs_teachers(mask)):
        notes.append(f"--cache-teachers: --mask {mask} uses no teacher, so nothing was cached")
    if cfg.old_model and not cfg.old_adapter and needs_teachers(mask)[0]:
        notes.append(
            f"no --old-adapter: the old task model M1 was --old-model {cfg.old_model} as it is; "
            "if M1 is that base plus a task adapter, pass it with --old-adapter"
        )
    try:
        start = json.loads((Path(cfg.new_adapter) / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return notes  # trained elsewhere: nothing to check against
    if start.get("config", {}).get("loss_on", cfg.loss_on) != cfg.loss_on:
        notes.append(
            f"--loss-on {cfg.loss_on}, but the new task adapter was trained with --loss-on "
            f"{start['config']['loss_on']}"
        )
    theirs = start.get("data", {})
    if theirs.get("hash") == data_info["hash"] and theirs.get("val_ids_hash") not in (
        None,
        data_info["val_ids_hash"],
    ):
        notes.append(
            "the validation split differs from the new task adapter's (another --seed or "
            "--val-fraction): it holds docs that adapter was trained on, so validation CE and "
            "the chosen epoch flatter it; use its --seed and --val-fraction"
        )
    notes += [f"the new task adapter's own run warned: {w}" for w in start.get("warnings", [])]
    return notes


def _linear_names(model: Any) -> list[str]:
    """The names LoRA can target: the model's linear layers but the output head, GPT-2's
    ``Conv1D`` layers (``c_attn``, ``c_proj``, ``c_fc``: linear layers PEFT targets too)
    included."""
    import torch
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, Conv1D)
    linear = (n for n, m in model.named_modules() if isinstance(m, kinds))
    return sorted({n.rsplit(".", 1)[-1] for n in linear} - {"lm_head"})


def _v2_teacher_fn(model: Any, device: Any, autocast: Any) -> Any:
    import torch

    from muscle.logits import logits_at
    from muscle.training.trainer import TEACHER_V2, active_adapter, eval_mode, teacher_precision

    def fn(inputs: dict[str, Any], keep: Any) -> Any:
        with (
            torch.no_grad(),
            eval_mode(model),
            active_adapter(model, TEACHER_V2),
            teacher_precision(device, autocast),
        ):
            return logits_at(model, inputs, keep)

    return fn


def _warmup(cfg: _BaseTrainingConfig, n_train: int, world: int) -> tuple[int, int]:
    """(total optimizer steps, warm-up steps); see :mod:`muscle.training.config`."""
    batches = math.ceil(n_train / (cfg.per_device_train_batch_size * world))
    per_epoch = max(math.ceil(batches / cfg.gradient_accumulation_steps), 1)
    total = cfg.max_steps if cfg.max_steps else per_epoch * cfg.num_train_epochs
    if cfg.warmup_ratio is not None:
        return total, math.ceil(cfg.warmup_ratio * total)
    return total, min(cfg.warmup_steps, math.ceil(cfg.max_warmup_fraction * total))


def _train(
    cfg: _BaseTrainingConfig,
    out: Path,
    task: Any,
    tok: Any,
    data: dict[str, Any],
    model: Any,
    *,
    models: dict[str, Any],
    callbacks: list[Any] | None,
    mask: str = "none",
    loss_kwargs: dict[str, Any] | None = None,
    v1_model: Any = None,
    v1_width: int | None = None,
    v2_live: bool = False,
    cache: Any = None,
    cache_info: dict[str, Any] | None = None,
    teacher_autocast: Any = None,
) -> dict:
    import torch
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments

    from muscle.training.trainer import (
        STUDENT,
        BestEpochCallback,
        FiniteGradCallback,
        MuscleTrainer,
        SaveAfterEpochEval,
        best_epoch_index,
        checkpoint_step,
        last_complete_checkpoint,
    )

    t0 = time.perf_counter()
    state = process_state(cfg.device)
    device = _train_device(cfg)
    has_val = len(data["val"]) > 0
    total, warmup = _warmup(cfg, len(data["train"]), state.num_processes)
    bf16 = device.type == "cuda" and _dtype(cfg) == "bfloat16"
    fp16 = device.type == "cuda" and _dtype(cfg) == "float16"
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size
        or cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps or -1,
        warmup_steps=warmup,
        lr_scheduler_type="linear",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="epoch" if has_val else "no",
        prediction_loss_only=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=_report_to(cfg),
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not cfg.show_progress,
        use_cpu=device.type == "cpu",
        bf16=bf16,
        fp16=fp16,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )
    if v1_model is not None:
        v1_model.to(args.device)

    class _LogEpochEnd(TrainerCallback):
        def on_epoch_end(self, a: Any, s: Any, control: Any, **kw: Any) -> None:
            control.should_log = True

    best_dir = out / "best"
    cbs = [_LogEpochEnd(), FiniteGradCallback()]
    if has_val:
        cbs.append(SaveAfterEpochEval())
    select_by = getattr(cfg, "select_by", "ce")
    select = "val_loss" if select_by == "loss" else "val_ce"  # "last": early stopping on val_ce
    if has_val:
        cbs.append(
            BestEpochCallback(
                best_dir,
                metric=select.replace("val_", "eval_"),
                patience=cfg.early_stopping_patience,
                keep_last=select_by == "last",
            )
        )
    cbs += callbacks or []
    with _tensorboard_dir(cfg, out):
        trainer = MuscleTrainer(
            model=model,
            args=args,
            train_dataset=data["train"],
            eval_dataset=data["val"] if has_val else None,
            data_collator=Collator(tok.pad_token_id, cache),
            processing_class=tok,
            callbacks=cbs,
            mask=mask,
            loss_kwargs=loss_kwargs,
            v1_model=v1_model,
            v1_width=v1_width,
            v2_live=v2_live,
            teacher_autocast=teacher_autocast,
        )
    if not cfg.show_progress:  # quiet: transformers would print each log dict instead of bars
        trainer.remove_callback(PrinterCallback)
    resume_from = last_complete_checkpoint(out / "checkpoints") if cfg.resume else None
    if resume_from is not None and state.is_main_process:  # drop interrupted saves after it
        for ckpt in (out / "checkpoints").glob("checkpoint-*"):
            if checkpoint_step(ckpt) > checkpoint_step(resume_from):
                shutil.rmtree(ckpt, ignore_errors=True)
    if resume_from is not None and checkpoint_step(resume_from) >= total:
        # Killed after its last step's checkpoint: nothing is left to train (transformers would
        # take one step more past a --max-steps that ends mid-epoch).
        from transformers import TrainerState

        trainer.state = TrainerState.load_from_json(str(resume_from / "trainer_state.json"))
        _load_adapter_weights(trainer.model, resume_from, STUDENT)
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    history = trainer.state.log_history
    epochs = _per_epoch(history)
    best_epoch = None
    if has_val and (best_dir / "adapter_model.safetensors").is_file():
        evaluated = [e for e in epochs if e.get(select) is not None]
        best = best_epoch_index([e[select] for e in evaluated], keep_last=select_by == "last")
        best_epoch = evaluated[best]["epoch"] if best is not None else None
        _load_adapter_weights(trainer.model, best_dir, STUDENT)
    kind = "compat" if isinstance(cfg, CompatTrainingConfig) else "task"
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "muscle_version": __version__,
        "kind": kind,
        "config": cfg.to_dict(),
        "task": task.describe(),
        "data": data["info"],
        "models": models,
        "mask": mask,
        "world_size": state.num_processes,
        "total_steps": trainer.state.global_step,
        "planned_steps": total,
        "warmup_steps": warmup,
        "epochs": epochs,
        "best_epoch": best_epoch
        if best_epoch is not None
        else (epochs[-1]["epoch"] if epochs else None),
        "selected_by": _SELECTED_BY[select_by] if has_val else "last epoch (no validation split)",
        "teacher_cache": cache_info,
        "warnings": run_warnings(
            kind,
            mask,
            epochs,
            lr_at_stop(history, trainer.state.global_step, total, cfg.learning_rate),
        )
        + _data_notes(cfg, data["info"], total)
        + _compat_notes(cfg, mask, data["info"])
        + _cache_notes(cache_info, cfg),
        "log_history": history,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    state.wait_for_everyone()
    if state.is_main_process:
        trainer.model.save_pretrained(str(out), selected_adapters=[STUDENT])
        tok.save_pretrained(str(out))
        shutil.rmtree(best_dir, ignore_errors=True)
        write_json(out / "training.json", result)
    state.wait_for_everyone()
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def _report_to(cfg: _BaseTrainingConfig) -> list[str]:
    if cfg.report_to == "none":
        return []
    import importlib.util

    if importlib.util.find_spec(cfg.report_to) is None:
        raise MuscleError(
            f"--report-to {cfg.report_to}: the {cfg.report_to} package is not installed "
            f"(pip install {cfg.report_to}), or use --report-to none"
        )
    return [cfg.report_to]


@contextlib.contextmanager
def _tensorboard_dir(cfg: _BaseTrainingConfig, out: Path) -> Iterator[None]:
    """TensorBoard event files go to ``OUT/logs`` unless TENSORBOARD_LOGGING_DIR is set."""
    key = "TENSORBOARD_LOGGING_DIR"
    if cfg.report_to != "tensorboard" or key in os.environ:
        yield
        return
    os.environ[key] = str(out / "logs")
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _per_epoch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch means of the training loss and of the share of training tokens aligned to v1
    (log entries weighted by the steps they cover), and the validation metrics logged at the
    end of each epoch."""
    epochs: dict[int, dict[str, Any]] = {}
    prev_step = 0
    sums: dict[int, list[float]] = {}
    for h in history:
        if "epoch" not in h:
            continue
        e = max(1, math.ceil(h["epoch"] - 1e-6))
        if "loss" in h and "eval_loss" not in h:
            steps = max(h["step"] - prev_step, 1)
            prev_step = h["step"]
            s = sums.setdefault(e, [0.0, 0, 0.0])
            s[0] += h["loss"] * steps
            s[1] += steps
            s[2] += h.get("aligned_v1", 0.0) * steps
        if "eval_loss" in h:
            rec = epochs.setdefault(e, {"epoch": e})
            rec["val_loss"] = h["eval_loss"]
            for k in ("ce", "kd_v1", "kd_v2", "aligned_v1"):
                if f"eval_{k}" in h:
                    rec[f"val_{k}"] = h[f"eval_{k}"]
    has_aligned = any("aligned_v1" in h and "eval_loss" not in h for h in history)
    for e, (total, n, aligned) in sums.items():
        rec = epochs.setdefault(e, {"epoch": e})
        rec["train_loss"] = total / n
        if has_aligned:
            rec["train_aligned_v1"] = aligned / n
    return [epochs[e] for e in sorted(epochs)]


def _load_adapter_weights(model: Any, folder: Path, adapter_name: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
