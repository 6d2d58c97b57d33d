"""Small I/O helpers shared by every command: atomic writes, JSONL, hashing."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from muscle.errors import MuscleError

SCHEMA_VERSION = "1.0"


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[TextIO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    A crash or exception leaves any previous ``path`` untouched and no partial file (a kill
    leaves a hidden temporary file, which the next write of ``path`` removes).  A folder that
    cannot be written is a :class:`MuscleError` naming ``path``.
    """
    path = Path(path)
    make_dir(path.parent)
    remove_leftovers(path, ".tmp")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MuscleError(f"{path}: cannot be written ({exc.strerror})") from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use the usual file mode
            os.replace(tmp, path)
        except FileNotFoundError:  # removed as a leftover by another run writing this path
            raise MuscleError(
                f"{path}: another run is writing it at the same time; give each run its own output"
            ) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_leftovers(path: Path, suffix: str = "") -> None:
    """Remove the temporary siblings of ``path`` (``tempfile``'s ``.NAME.XXXXXXXX{suffix}``,
    files or folders) that a killed run left behind: one run writes ``path`` at a time, and
    nothing else would ever remove them."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}{suffix}"):
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()


def make_dir(path: str | os.PathLike[str], option: str = "") -> Path:
    """Create the folder ``path`` (and its parents); one :class:`MuscleError` naming it (and
    the ``option`` that gave it) when that cannot be done."""
    where = f"{option} {os.fspath(path)}" if option else os.fspath(path)
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise MuscleError(f"{where}: exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MuscleError(f"{where}: cannot create the folder ({exc.strerror})") from None
    return p


def check_out_apart(
    out: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    out_option: str = "--out",
    *,
    writes: Iterable[str | os.PathLike[str]] | None = None,
) -> None:
    """Refuse an output that is, holds or sits inside one of ``inputs`` (what each is called,
    e.g. ``"--model"`` -> its path): writing it would overwrite or change that input.

    ``writes``: the paths actually written when they are not ``out`` alone (a file and its
    companion files; the files of a folder that may hold inputs beside them).  Inputs that
    are no existing local path (hub ids, ``None``) are skipped."""
    written = [Path(p).expanduser().resolve() for p in (writes if writes is not None else [out])]
    itself = Path(out).expanduser().resolve()
    for what, given in inputs.items():
        if given is None or not os.fspath(given) or not Path(given).expanduser().exists():
            continue
        src = Path(given).expanduser().resolve()
        for w in written:
            if w == src and w == itself:
                clash = f"is also {what} {os.fspath(given)}, which it would overwrite"
            elif w == src:
                clash = f"would write {w.name} over {what} {os.fspath(given)}"
            elif src in w.parents:
                clash = f"lies inside {what} {os.fspath(given)}, which it would change"
            elif w in src.parents:
                clash = f"holds {what} {os.fspath(given)}, which it would overwrite"
            else:
                continue
            raise MuscleError(
                f"{out_option} {os.fspath(out)}: {clash}; choose another {out_option}"
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_json_default, ensure_ascii=False))
            fh.write("\n")


def not_utf8(path: str | os.PathLike[str], exc: UnicodeDecodeError) -> MuscleError:
    """The one-line error for a file that is not UTF-8 text."""
    return MuscleError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8")


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; malformed lines raise
    :class:`MuscleError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MuscleError(f"{path}: file not found")
    try:
        yield from _read_jsonl_lines(path)
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None


def _read_jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MuscleError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or remove that line"
                ) from None
            if not isinstance(obj, dict):
                raise MuscleError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`MuscleError`."""
    path = Path(path)
    if not path.is_file():
        raise MuscleError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
    except json.JSONDecodeError as exc:
        raise MuscleError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a string (as lm-evaluation-harness hashes docs and prompts)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(
    path: str | os.PathLike[str], suffixes: tuple[str, ...] = (".safetensors", ".json")
) -> str:
    """Content hash of the weight and config files in a folder (sorted by name)."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(suffixes)):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
