"""Loading base models, PEFT adapters and GGUF checkpoints; tokenizer checks."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muscle.errors import MuscleError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise MuscleError(f"unknown --device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on GPUs that support it, else float32."""
    import torch

    if dtype not in _DTYPES:
        raise MuscleError(f"unknown --dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _check_base(base: str, gguf_file: str | None) -> None:
    p = Path(base)
    if p.exists():
        if gguf_file is not None and not (p / gguf_file).is_file():
            raise MuscleError(f"{p / gguf_file}: GGUF file not found in the model folder")
        if gguf_file is None and not (p / "config.json").is_file():
            raise MuscleError(
                f"{base}: not a Hugging Face model folder (no config.json); "
                "pass --gguf-file NAME for a GGUF checkpoint"
            )
    elif base.startswith((".", "/", "~")) or base.count("/") != 1:
        # Not "org/name": it can only have been meant as a local folder.
        raise MuscleError(f"{base}: model folder not found (give a local folder or a hub id)")


def load_tokenizer(base: str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (EOS if it has none)."""
    from transformers import AutoTokenizer

    _check_base(base, gguf_file)
    kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(base, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(
    base: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> PreTrainedModel:
    """A causal LM in evaluation mode on ``device`` (GGUF checkpoints are dequantised)."""
    from transformers import AutoModelForCausalLM

    _check_base(base, gguf_file)
    dev = resolve_device(device)
    kw: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev)}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    model = AutoModelForCausalLM.from_pretrained(base, **kw)
    return model.to(dev).eval()


def adapter_base_name(adapter: str) -> str | None:
    """``base_model_name_or_path`` recorded in a PEFT adapter folder."""
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.is_file():
        raise MuscleError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    return json.loads(cfg.read_text()).get("base_model_name_or_path")


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Wrap models with PEFT without its internals' noise: PEFT reads
    ``model.is_gradient_checkpointing``, which transformers 5 deprecates, so every wrap printed a
    FutureWarning the user cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield


def attach_adapter(
    model: PreTrainedModel, adapter: str, *, adapter_name: str = "default", trainable: bool = False
) -> Any:
    """Wrap ``model`` with the PEFT adapter in ``adapter``.  Shape mismatches (an adapter
    trained on another base) raise :class:`MuscleError`."""
    from peft import PeftModel

    adapter_base_name(adapter)
    try:
        with peft_wrapping():
            return PeftModel.from_pretrained(
                model, adapter, adapter_name=adapter_name, is_trainable=trainable
            )
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else "")
        trained_on = adapter_base_name(adapter)
        origin = f"; it was trained on {trained_on!r}" if trained_on else ""
        raise MuscleError(
            f"{adapter}: adapter does not match base model "
            f"{getattr(model, 'name_or_path', '?')} ({detail[:400] or type(exc).__name__})"
            f"{origin}; pass the base model the adapter was trained on"
        ) from None


def load_model(
    base: str,
    adapter: str | None = None,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Base model (plus optional adapter) and its tokenizer, ready for evaluation."""
    tok = load_tokenizer(base, gguf_file)
    model = load_base_model(base, gguf_file=gguf_file, dtype=dtype, device=device)
    if adapter:
        model = attach_adapter(model, adapter).eval()
    return model, tok


def check_tokenizers_match(old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase) -> None:
    """Distillation between model versions needs identical vocabularies (same tokens, same
    ids).  Raise :class:`MuscleError` naming the first differing tokens otherwise."""
    va, vb = old.get_vocab(), new.get_vocab()
    if va == vb:
        return
    by_id_a = {i: t for t, i in va.items()}
    by_id_b = {i: t for t, i in vb.items()}
    diffs = []
    for i in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(i) != by_id_b.get(i):
            diffs.append(f"id {i}: {by_id_a.get(i)!r} vs {by_id_b.get(i)!r}")
        if len(diffs) == 3:
            break
    raise MuscleError(
        f"old and new tokenizers differ (vocab sizes {len(va)} and {len(vb)}; first differences: "
        f"{'; '.join(diffs)}); MUSCLE distils token distributions and needs the same tokenizer"
    )
