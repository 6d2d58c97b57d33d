"""``evaluate`` (in-memory model) and ``evaluate_model`` (paths)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from muscle import __version__
from muscle.distributed import process_state, world_size
from muscle.errors import MuscleError
from muscle.evaluation import records as R
from muscle.io import (
    SCHEMA_VERSION,
    atomic_open,
    check_out_apart,
    sha256_dir,
    sha256_file,
    write_json,
    write_jsonl,
)
from muscle.models import eval_mode
from muscle.tasks import Task, get_task
from muscle.tasks.base import Doc

FEWSHOT_SEED = 1234


@dataclass
class EvalResult:
    """Per-instance records (in doc order) and the summary dict."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    path: str | None = None


def build_context(task: Task, doc: Doc, pool: list[Doc], num_fewshot: int) -> str:
    """The prompt with ``num_fewshot`` solved examples drawn from ``pool`` (never ``doc``
    itself), seeded by the doc id so the choice is the same in every process and on resume."""
    text = task.doc_to_text(doc)
    if num_fewshot <= 0:
        return text
    doc_id = task.doc_id(doc)
    # the doc itself, where the pool is its own split (another split's doc "2" is another doc)
    candidates = [d for d in pool if task.doc_id(d) != doc_id or d != doc]
    if len(candidates) < num_fewshot:
        need = num_fewshot + len(pool) - len(candidates)
        raise MuscleError(
            f"--num-fewshot {num_fewshot} needs at least {need} docs, have {len(pool)}"
        )
    shots = random.Random(f"{FEWSHOT_SEED}:{doc_id}").sample(candidates, num_fewshot)
    parts = [task.doc_to_text(s) + task.target_delimiter + task.doc_to_target(s) for s in shots]
    return task.fewshot_delimiter.join([*parts, text])


class _Dist:
    """Rank/world and collectives; a no-op in a single process."""

    def __init__(self, device: str) -> None:
        self.state = process_state(device) if world_size() > 1 else None
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, items: list[Any]) -> list[Any]:
        if self.state is None:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task | str,
    docs: list[Doc],
    *,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    out_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    model_info: dict[str, Any] | None = None,
    show_progress: bool = True,
    fewshot_pool: list[Doc] | None = None,
    extra_summary: dict[str, Any] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``docs``.  With ``out_path``, records are appended per batch to
    ``out_path.partial`` (``--resume`` continues from it), then the final file (doc order) and
    ``out_path.summary.json`` are written atomically.  Under ``torchrun``/``accelerate launch``
    the instances are sharded across processes and rank 0 writes the merged files.
    ``num_fewshot=None`` takes the task's default (lm-eval's: 5 for GSM8K, else 0)."""
    if isinstance(task, str):
        task = get_task(task)
    if num_fewshot is None:
        num_fewshot = task.default_num_fewshot
    if num_fewshot < 0:
        raise MuscleError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if batch_size < 1:
        raise MuscleError(f"--batch-size must be >= 1, got {batch_size}")
    if not docs:
        raise MuscleError(f"no docs to evaluate for task {task.name!r}")
    dist = _Dist(next(model.parameters()).device.type)
    out = Path(out_path) if out_path is not None else None
    ids = [task.doc_id(d) for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise MuscleError(f"duplicate doc id {dup!r} in task {task.name!r}; ids must be unique")
    pool = fewshot_pool if fewshot_pool is not None else docs
    contexts = [build_context(task, d, pool, num_fewshot) for d in docs]
    run_info = {
        "model": model_info or {},
        "task": task.describe(),
        "num_fewshot": num_fewshot,
    }

    # --- resume bookkeeping -----------------------------------------------------------------
    done: dict[str, dict[str, Any]] = {}
    if out is not None:
        meta = out.with_name(out.name + ".resume.json")
        if resume:
            if meta.is_file() or R.partial_paths(out):  # partial files without it: refused
                _check_same_run(meta, run_info, "partial results")
            done = R.read_partial(R.partial_paths(out))
            if out.is_file() and not R.partial_paths(out):  # a finished run: its summary tells
                _check_same_run(out.with_name(out.name + ".summary.json"), run_info, "results")
                done = R.read_partial([out])
            # keep only records of these very docs and prompts
            want = {
                i: R.base_record(task, d, c) for i, d, c in zip(ids, docs, contexts, strict=True)
            }
            done = {
                k: v
                for k, v in done.items()
                if k in want
                and all(v.get(f) == want[k][f] for f in ("doc_hash", "prompt_hash", "task_version"))
            }
        dist.barrier()
        if dist.rank == 0:
            if not resume:  # a fresh run: killed, an earlier run's results would pass for its own
                R.remove_partials(out)
                out.unlink(missing_ok=True)
                out.with_name(out.name + ".summary.json").unlink(missing_ok=True)
            with atomic_open(meta) as fh:
                json.dump(run_info, fh, default=str)
        dist.barrier()

    todo = [i for i, doc_id in enumerate(ids) if doc_id not in done]
    mine = todo[dist.rank :: dist.world]
    t0 = time.perf_counter()
    new_records: list[dict[str, Any]] = []
    part_fh = None
    if out is not None:
        part_fh = R.partial_path(out, dist.rank, dist.world).open("a", encoding="utf-8")
    bar = None
    if show_progress and dist.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"{task.name}", unit="inst", leave=False)
    try:
        batches = _iter_batches(model, tokenizer, task, docs, contexts, mine, batch_size)
        with eval_mode(model):  # dropout off, as lm-eval; the caller's mode restored after
            for batch in batches:
                new_records.extend(batch)
                if part_fh is not None:
                    part_fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch))
                    part_fh.flush()
                    os.fsync(part_fh.fileno())
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if part_fh is not None:
            part_fh.close()
        if bar is not None:
            bar.close()
    seconds_local = time.perf_counter() - t0

    # --- merge ---------------------------------------------------------------------------------
    gathered = dist.gather(new_records)
    seconds = max(dist.gather([seconds_local]))
    by_id = {**done, **{r["id"]: r for r in gathered}}
    missing = [i for i in ids if i not in by_id]
    if missing:  # pragma: no cover - would be a bug
        raise RuntimeError(f"{len(missing)} instances were not evaluated (e.g. {missing[0]!r})")
    all_records = [by_id[i] for i in ids]
    n_new = len(gathered)
    summary = {
        "schema_version": SCHEMA_VERSION,
        "muscle_version": __version__,
        "kind": "muscle.eval.summary",
        "model": model_info or {},
        "task": task.describe(),
        "num_fewshot": num_fewshot,
        "batch_size": batch_size,
        "num_processes": dist.world,
        "n": len(all_records),
        "n_evaluated": n_new,
        "n_resumed": len(all_records) - n_new,
        "primary_metric": R.primary_metric(task),
        "metrics": R.metrics(task, all_records),
        "warnings": R.warnings(task, all_records),
        "seconds": round(seconds, 3),
        "instances_per_second": round(n_new / seconds, 3) if seconds > 0 else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra_summary or {}),
    }
    if out is not None:
        if dist.rank == 0:
            write_jsonl(out, all_records)
            write_json(out.with_name(out.name + ".summary.json"), summary)
            R.remove_partials(out)
            out.with_name(out.name + ".resume.json").unlink(missing_ok=True)
        dist.barrier()
    return EvalResult(all_records, summary, str(out) if out else None)


def _check_same_run(path: Path, run_info: dict[str, Any], what: str) -> None:
    """Refuse to resume from ``what`` whose model, task or few-shot setting (recorded in ``path``)
    differ from ``run_info``'s, or cannot be read."""
    hint = "; rerun without --resume to start over"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MuscleError(f"{path}: cannot tell which run wrote the {what}{hint}") from None
    if {k: old.get(k) for k in run_info} != json.loads(json.dumps(run_info, default=str)):
        raise MuscleError(
            f"{path}: the {what} come from a different model, task or few-shot setting{hint}"
        )


def _iter_batches(
    model: Any,
    tokenizer: Any,
    task: Task,
    docs: list[Doc],
    contexts: list[str],
    indices: list[int],
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of finished records, one list per model batch."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    from muscle.evaluation.loglik import (
        build_request,
        encode,
        is_truncated,
        iter_loglikelihoods,
        model_max_length,
        packed_length,
    )

    max_len = model_max_length(model)
    if task.output_type == "multiple_choice":
        choices = {i: task.doc_to_choices(docs[i]) for i in indices}
        reqs = {
            i: build_request(tokenizer, contexts[i], choices[i], task.target_delimiter)
            for i in indices
        }
        order = sorted(indices, key=lambda i: (-packed_length(reqs[i]), i))
        dense = [reqs[i] for i in order]  # iter_loglikelihoods indexes a sequence
        pos = list(range(len(order)))
        metric = R.primary_metric(task)
        for batch in iter_loglikelihoods(model, dense, pos, batch_size, pad_id):
            out = []
            for p, lls in batch:
                i = order[p]
                rec = R.base_record(task, docs[i], contexts[i])
                rec.update(R.mc_fields(lls, choices[i], task.gold_index(docs[i]), metric))
                if is_truncated(reqs[i], max_len):
                    rec["truncated"] = True  # the context lost its start (as lm-eval's does)
                out.append(rec)
            yield out
        return

    from muscle.evaluation.generate import iter_generations

    kw = dict(task.generation_kwargs())
    until = list(kw.pop("until", []))
    max_new = int(kw.pop("max_new_tokens", 256))
    if tokenizer.eos_token and tokenizer.eos_token not in until:
        until.append(tokenizer.eos_token)
    prompts = {i: encode(tokenizer, contexts[i]) for i in indices}
    order = sorted(indices, key=lambda i: (-len(prompts[i]), i))
    dense = [prompts[i] for i in order]
    for batch in iter_generations(
        model,
        tokenizer,
        dense,
        list(range(len(order))),
        batch_size,
        until=until,
        max_new_tokens=max_new,
        pad_id=pad_id,
        **kw,
    ):
        out = []
        for p, text in batch:
            i = order[p]
            rec = R.base_record(task, docs[i], contexts[i])
            rec["generated"] = text
            rec.update(task.score_generation(docs[i], text))
            if len(prompts[i]) > max(1, max_len - max_new):
                rec["truncated"] = True  # the prompt lost its start to leave room for the answer
            out.append(rec)
        yield out


def _check_out_file(out: Path) -> None:
    """``--out`` must name a file that can be written: not a folder, in a folder that exists or
    can be made (not under a file)."""
    if out.is_dir():
        raise MuscleError(f"--out {str(out)!r} is a folder; give a file such as results.jsonl")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MuscleError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise MuscleError(f"--out {out}: {parent} is not writable")


def task_inputs(task: Task, data: str | None) -> dict[str, str | Path | None]:
    """The local inputs a task reads: ``--data`` and, for a spec task, its spec file and every
    data file it names (what an output must not overwrite)."""
    from muscle.tasks.spec import SpecTask

    inputs: dict[str, str | Path | None] = {"--data": data}
    if data and Path(data).expanduser().is_dir():  # a folder: the files in it (not the folder:
        del inputs["--data"]  # an output written beside them changes nothing that is read)
        for f in sorted(Path(data).expanduser().iterdir()):
            inputs[f"--data's {f.name}"] = f
    if isinstance(task, SpecTask):
        inputs["--task"] = task.source
        folder = Path(data).expanduser() if data and Path(data).expanduser().is_dir() else None
        for split, name in task.data_files.items():
            inputs[f"--task's {split} data file"] = (folder or task.source.parent) / name
    return inputs


def model_identity(
    base: str, adapter: str | None, gguf_file: str | None, dtype: str, device: str
) -> dict[str, Any]:
    """Base/adapter paths with content hashes (``None`` for hub ids)."""
    bp = Path(base)
    info: dict[str, Any] = {"base": str(bp.resolve()) if bp.exists() else base}
    if gguf_file:
        info["gguf_file"] = gguf_file
        info["base_sha256"] = sha256_file(bp / gguf_file) if (bp / gguf_file).is_file() else None
    else:
        info["base_sha256"] = sha256_dir(bp) if bp.is_dir() else None
    if adapter:
        ap = Path(adapter)
        info["adapter"] = str(ap.resolve())
        info["adapter_sha256"] = sha256_dir(ap) if ap.is_dir() else None
    else:
        info["adapter"] = None
        info["adapter_sha256"] = None
    info["dtype"] = dtype
    info["device"] = device
    return info


def _fewshot_pool(task: Task, data: str | None, split: str | None, docs: list[Doc]) -> list[Doc]:
    """Few-shot examples come from the train split when there is one (as lm-eval's
    ``fewshot_split``), else from the evaluated docs (the instance itself is never used)."""
    if (split or task.default_split) == "train":
        return docs
    try:
        train = task.load_docs(data, "train")
    except MuscleError:
        return docs
    return train or docs


def evaluate_model(
    base: str,
    *,
    adapter: str | None = None,
    gguf_file: str | None = None,
    task: str | os.PathLike[str] | Task,
    data: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    dtype: str = "auto",
    device: str = "auto",
    out_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> EvalResult:
    """Load ``base`` (+ ``adapter``), read the task's docs and :func:`evaluate`."""
    from muscle.models import load_model, progress_bars

    task_obj = task if isinstance(task, Task) else get_task(os.fspath(task))
    # "~" as a shell would expand it (a quoted path, --model=~/x, the Python API)
    base, adapter, data = (os.path.expanduser(p) if p else p for p in (base, adapter, data))
    out_path = os.path.expanduser(out_path) if out_path is not None else None
    if limit is not None and limit < 1:
        raise MuscleError(f"--limit must be >= 1, got {limit}")
    if num_fewshot is None:
        num_fewshot = task_obj.default_num_fewshot
    if num_fewshot < 0:
        raise MuscleError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if out_path is not None:  # before the model loads
        out = Path(out_path)
        _check_out_file(out)
        inputs = {"--model": base, "--adapter": adapter, **task_inputs(task_obj, data)}
        companions = (".summary.json", ".partial", ".resume.json")
        check_out_apart(
            out, inputs, writes=[out, *(out.with_name(out.name + c) for c in companions)]
        )
    docs = task_obj.load_docs(data, split)
    pool = _fewshot_pool(task_obj, data, split, docs) if num_fewshot > 0 else docs
    if limit is not None:
        docs = docs[:limit]
    if not docs:
        which = split or task_obj.default_split
        raise MuscleError(f"{data or task_obj.name}: no instances found for split {which!r}")
    if world_size() > 1 and device in ("auto", "cuda"):
        dev = process_state(device).device  # this process's own device: cuda:LOCAL_RANK on GPUs
        if device == "auto" or dev.type == "cuda":  # (a bare "cuda" is GPU 0 for every rank)
            device = dev.type if dev.type in ("cpu", "mps") else str(dev)
    with progress_bars(show_progress):
        model, tok = load_model(base, adapter, gguf_file=gguf_file, dtype=dtype, device=device)
    first = next(model.parameters())
    info = model_identity(
        base, adapter, gguf_file, str(first.dtype).removeprefix("torch."), str(first.device)
    )
    result = evaluate(
        model,
        tok,
        task_obj,
        docs,
        batch_size=batch_size,
        num_fewshot=num_fewshot,
        out_path=out_path,
        resume=resume,
        model_info=info,
        show_progress=show_progress,
        fewshot_pool=pool,
        extra_summary={
            "data": {"path": data, "split": split or task_obj.default_split, "limit": limit}
        },
    )
    return result
