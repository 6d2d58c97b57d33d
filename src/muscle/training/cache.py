"""Teacher cache: the teachers' top-k log-probabilities per token, computed once, memory-mapped.

Layout of a cache folder::

    index.json          key, teacher names, k, per-example row offsets and lengths
    {name}_logp.npy     float32 (total_tokens, k): log-probabilities at T = 1, sorted descending
    {name}_idx.npy      int32   (total_tokens, k): their token ids
    {name}_logz.npy     float32 (total_tokens,): logsumexp(log p / T) over the vocabulary, at
                        the training temperature T (for the top-k plus tail-bucket KL)

Row ``offsets[i] + t`` holds the teacher's prediction at position ``t`` of example ``i`` (that is,
for label ``t + 1``).  The folder is built under a temporary name and renamed into place, so a
present ``index.json`` means a complete cache; a cache whose ``key`` (teachers, data, k, T)
differs is rebuilt.  Size: ``2 teachers x total_tokens x (8k + 4) bytes`` (k = 64: ~1 KiB/token).
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

from muscle.io import write_json
from muscle.training.losses import topk_from_logits

TeacherFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


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
        self.temperature: float = meta["temperature"]

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

    def batch(self, indices: Sequence[int], length: int) -> dict[str, torch.Tensor]:
        """``{name}_logp`` / ``{name}_idx`` ``(B, length, k)`` and ``{name}_logz``
        ``(B, length)`` tensors, zero-padded."""
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            logp = np.zeros((len(indices), length, self.k), dtype=np.float32)
            idx = np.zeros((len(indices), length, self.k), dtype=np.int64)
            logz = np.zeros((len(indices), length), dtype=np.float32)
            for b, i in enumerate(indices):
                o, n = int(self.offsets[i]), min(int(self.lengths[i]), length)
                logp[b, :n] = self._logp[name][o : o + n]
                idx[b, :n] = self._idx[name][o : o + n]
                logz[b, :n] = self._logz[name][o : o + n]
            out[f"{name}_logp"] = torch.from_numpy(logp)
            out[f"{name}_idx"] = torch.from_numpy(idx)
            out[f"{name}_logz"] = torch.from_numpy(logz)
        return out

    @classmethod
    def build(
        cls,
        folder: str | Path,
        key: str,
        rows: Sequence[Sequence[int]],
        teachers: dict[str, TeacherFn],
        *,
        k: int,
        temperature: float,
        batch_size: int,
        pad_token_id: int,
        device: torch.device,
        show_progress: bool = True,
    ) -> TeacherCache:
        """Run every teacher once over ``rows`` (token id lists) and write the cache."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        lengths = [len(r) for r in rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(offsets[-1])
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            names = list(teachers)
            vocab_k: int | None = None
            arrays: dict[str, tuple[Any, Any, Any]] = {}
            order = sorted(range(len(rows)), key=lambda i: -lengths[i])  # less padding
            batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
            progress = _progress(batches, show_progress)
            for chunk in progress:
                n = max(lengths[i] for i in chunk)
                ids = torch.full((len(chunk), n), pad_token_id, dtype=torch.long)
                att = torch.zeros((len(chunk), n), dtype=torch.long)
                for b, i in enumerate(chunk):
                    ids[b, : lengths[i]] = torch.tensor(rows[i])
                    att[b, : lengths[i]] = 1
                inputs = {"input_ids": ids.to(device), "attention_mask": att.to(device)}
                for name in names:
                    with torch.no_grad():
                        logits = teachers[name](inputs)
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
                    for b, i in enumerate(chunk):
                        o, m = int(offsets[i]), lengths[i]
                        arrays[name][0][o : o + m] = logp_np[b, :m]
                        arrays[name][1][o : o + m] = idx_np[b, :m]
                        arrays[name][2][o : o + m] = logz_np[b, :m]
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
