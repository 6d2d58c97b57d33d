"""Teacher cache: the teachers' top-k log-probabilities per label token, computed once,
memory-mapped.

Layout of a cache folder::

    index.json          key, teacher names, k, per-example row offsets and lengths, and
                        each teacher's mean probability mass outside its top k at T
    {name}_logp.npy     float32 (label_tokens, k): log-probabilities at T = 1, sorted descending
    {name}_idx.npy      int32   (label_tokens, k): their token ids
    {name}_logz.npy     float32 (label_tokens,): logsumexp(log p / T) over the vocabulary, at
                        the training temperature T (for the top-k plus tail-bucket KL)

Only positions that predict a label are kept (with the loss on the answer, no prompt token):
row ``offsets[i] + j`` holds the teacher's prediction for the ``j``-th label token of example
``i``, so the rows of a batch, concatenated, are in the ``packed`` order of
:func:`~muscle.training.losses.compat_loss`.  The teachers compute logits there only where the
model supports ``logits_to_keep``.  The folder is built under a temporary name and renamed into
place, so a present ``index.json`` means a complete cache; a cache whose ``key`` (teachers,
data, k, T) differs is rebuilt.  Size: ``2 teachers x label_tokens x (8k + 4) bytes`` (k = 64:
~1 KiB per label token).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muscle.io import remove_leftovers, write_json
from muscle.training.data import Collator
from muscle.training.losses import label_positions, topk_from_logits

# (inputs, keep) -> (N, V) logits at the positions where the boolean (B, L) ``keep`` holds
TeacherFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
LAYOUT = "label-positions"  # part of every cache key: caches of another layout are rebuilt


class TeacherCache:
    """Read access to a built cache (memory-mapped; cheap to open in every process)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "index.json").read_text())
        self.key: str = meta["key"]
        self.names: list[str] = meta["names"]
        self.k: int = meta["k"]
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)
        self.lengths = np.asarray(meta["lengths"], dtype=np.int64)
        self._logp = {n: np.load(self.folder / f"{n}_logp.npy", mmap_mode="r") for n in self.names}
        self._idx = {n: np.load(self.folder / f"{n}_idx.npy", mmap_mode="r") for n in self.names}
        self._logz = {n: np.load(self.folder / f"{n}_logz.npy", mmap_mode="r") for n in self.names}
        # mean probability at T outside each teacher's top k: what the tail bucket lumps together
        self.tail_mass: dict[str, float] = meta.get("tail_mass", {})

    @classmethod
    def open(cls, folder: str | Path, key: str) -> TeacherCache | None:
        """The cache in ``folder`` if complete and built for ``key``, else ``None``."""
        index = Path(folder) / "index.json"
        if not index.is_file():
            return None
        try:
            if json.loads(index.read_text()).get("key") != key:
                return None
        except json.JSONDecodeError:
            return None
        return cls(folder)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``{name}_logp`` / ``{name}_idx`` ``(N, k)`` and ``{name}_logz`` ``(N,)``: the label
        tokens of the examples ``indices``, one after the other (packed)."""
        ends = self.offsets + self.lengths
        spans = [slice(int(self.offsets[i]), int(ends[i])) for i in indices]
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            for part, arrays, dtype in (
                ("logp", self._logp, np.float32),
                ("idx", self._idx, np.int64),
                ("logz", self._logz, np.float32),
            ):
                rows = [arrays[name][sl] for sl in spans]
                out[f"{name}_{part}"] = torch.from_numpy(np.concatenate(rows).astype(dtype))
        return out

    @classmethod
    def build(
        cls,
        folder: str | Path,
        key: str,
        rows: Sequence[dict[str, Sequence[int]]],
        teachers: dict[str, TeacherFn],
        *,
        k: int,
        temperature: float,
        batch_size: int,
        pad_token_id: int,
        device: torch.device,
        show_progress: bool = True,
    ) -> TeacherCache:
        """Run every teacher once over ``rows`` (encoded examples: ``input_ids`` and
        ``labels``) and write the cache of their label positions."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        lengths = [sum(1 for y in r["labels"][1:] if y != -100) for r in rows]
        widths = [len(r["input_ids"]) for r in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(offsets[-1])
        remove_leftovers(folder)  # a killed build's
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            names = list(teachers)
            vocab_k: int | None = None
            tail_sum = dict.fromkeys(teachers, 0.0)
            arrays: dict[str, tuple[Any, Any, Any]] = {}
            order = sorted(range(len(rows)), key=lambda i: -widths[i])  # less padding
            batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            progress = _progress(batches, show_progress)
            for chunk in progress:
                batch = Collator(pad_token_id)([rows[i] for i in chunk])  # as in training
                inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
                keep = label_positions(batch["labels"]).to(device)
                for name in names:
                    with torch.no_grad():
                        logits = teachers[name](inputs, keep)  # (N, V), example by example
                    top = topk_from_logits(logits, k, temperature)
                    if vocab_k is None:
                        vocab_k = int(top.idx.shape[-1])
                    if name not in arrays:
                        arrays[name] = (
                            np.lib.format.open_memmap(
                                tmp / f"{name}_logp.npy", "w+", np.float32, (total, vocab_k)
                            ),
                            np.lib.format.open_memmap(
                                tmp / f"{name}_idx.npy", "w+", np.int32, (total, vocab_k)
                            ),
                            np.lib.format.open_memmap(
                                tmp / f"{name}_logz.npy", "w+", np.float32, (total,)
                            ),
                        )
                    logp_np = top.logp.float().cpu().numpy()
                    idx_np = top.idx.cpu().numpy().astype(np.int32)
                    logz_np = top.logz.float().cpu().numpy()
                    top_mass = np.exp(logp_np / temperature - logz_np[:, None]).sum(-1)
                    tail_sum[name] += float(np.clip(1.0 - top_mass, 0.0, 1.0).sum())
                    start = 0
                    for i in chunk:
                        o, m = int(offsets[i]), lengths[i]
                        arrays[name][0][o : o + m] = logp_np[start : start + m]
                        arrays[name][1][o : o + m] = idx_np[start : start + m]
                        arrays[name][2][o : o + m] = logz_np[start : start + m]
                        start += m
            for parts in arrays.values():
                for arr in parts:
                    arr.flush()
            del arrays
            write_json(
                tmp / "index.json",
                {
                    "key": key,
                    "names": names,
                    "k": vocab_k,
                    "temperature": temperature,
                    "offsets": offsets[:-1].tolist(),
                    "lengths": lengths,
                    "total_tokens": total,
                    "tail_mass": {n: t / max(1, total) for n, t in tail_sum.items()},
                },
            )
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(folder)


def _progress(items: list[Any], show: bool) -> Any:
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="teacher cache", unit="batch")
