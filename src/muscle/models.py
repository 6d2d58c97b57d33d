"""Loading base models, PEFT adapters and GGUF checkpoints; tokenizer checks."""

from __future__ import annotations

import contextlib
import json
import os
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
        raise MuscleError(f"unknown --device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MuscleError(
            f"unknown --device {device!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise MuscleError(
                f"--device {device}: no CUDA device is available here; use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= n:
            raise MuscleError(f"--device {device}: this machine has {n} CUDA device(s)")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise MuscleError("--device mps: no MPS device is available here; use --device cpu or auto")
    return dev


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


_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _pickles(folder: Path) -> list[str]:
    return sorted(f.name for pattern in _PICKLES for f in folder.glob(pattern))


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[None]:
    """``module`` in evaluation mode (dropout off) for the block, its own mode restored after
    (a model a user trained in a notebook is left in training mode)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _pickle_error(where: str, files: list[str]) -> MuscleError:
    return MuscleError(
        f"{where}: the weights are pickle files ({files[0]}), which can run code when loaded; "
        "muscle-llm reads safetensors only: convert them where you trust them "
        "(from_pretrained, then save_pretrained(..., safe_serialization=True))"
    )


def _check_base(base: str, gguf_file: str | None) -> None:
    """A local folder must hold a model muscle-llm will load: config, safetensors weights (or
    the GGUF file), a tokenizer, and no custom code.  Any other name must be a hub id: org/name,
    or a bare legacy id (``gpt2``) already in the local hub cache."""
    p = Path(base)
    if not p.exists():
        if _bare_hub_id(base):
            if _in_hub_cache(base, gguf_file or "config.json"):
                return  # a legacy hub id (gpt2, t5-small) downloaded before
            # Most likely a mistyped folder: refused at once, not after the hub's retries.
            raise MuscleError(_no_bare_model(base))
        if base.startswith((".", "/", "~")) or base.count("/") != 1:
            # Not "org/name": it can only have been meant as a local folder.
            raise MuscleError(
                f"{base}: model folder not found (give a local folder, or a hub id as org/name)"
            )
        if p.parent.is_dir():  # "runs/v1" beside an existing runs/: most likely a typo
            raise MuscleError(
                f"{base}: model folder not found in {p.parent}/ (to load the hub id {base}, "
                f"run from a folder without a {p.parent}/ in it)"
            )
        return  # a hub id: transformers fetches it
    if not p.is_dir():
        raise MuscleError(
            f"{base}: not a folder; give the model's folder (--gguf-file NAME inside)"
        )
    if gguf_file is not None:
        if not (p / gguf_file).is_file():
            raise MuscleError(f"{p / gguf_file}: GGUF file not found in the model folder")
        return
    if not (p / "config.json").is_file():
        if (p / "adapter_config.json").is_file():
            trained_on = _adapter_config(p).get("base_model_name_or_path") or "its base model"
            raise MuscleError(
                f"{base}: a PEFT adapter, not a base model; pass it as --adapter, with --model "
                f"{trained_on}"
            )
        raise MuscleError(
            f"{base}: not a Hugging Face model folder (no config.json); "
            "pass --gguf-file NAME for a GGUF checkpoint"
        )
    if (p / "adapter_config.json").is_file():  # transformers would apply it on load, unasked
        raise MuscleError(
            f"{base}: holds a model and a PEFT adapter (adapter_config.json), which transformers "
            "would apply on loading it; move the adapter to its own folder and pass it with "
            "--adapter (or remove it if the weights are already merged)"
        )
    if not any(p.glob("*.safetensors")):
        if pickles := _pickles(p):
            raise _pickle_error(base, pickles)
        raise MuscleError(f"{base}: no weights (*.safetensors) in the model folder")
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise MuscleError(
            f"{base}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}) in the model folder; "
            "save the tokenizer with the model (tokenizer.save_pretrained)"
        )
    _check_no_custom_code(p)


def _bare_hub_id(name: str) -> bool:
    """A valid hub repo id without an org (``gpt2``, ``t5-small``): no path separator, no
    leading ``.`` or ``~``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if any(sep and sep in name for sep in ("/", os.sep, os.altsep)) or name.startswith((".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str, filename: str) -> bool:
    """Whether ``filename`` of the hub model ``repo_id`` is in the local hub cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def _no_bare_model(name: str) -> str:
    """The error for a bare name that is neither a folder nor a cached hub model."""
    from huggingface_hub import constants

    return (
        f"{name}: no model folder of that name here, and no hub model {name!r} in the local "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}); check the folder's path, or give a "
        "hub id as org/name to download one (gpt2 is openai-community/gpt2)"
    )


def _check_no_custom_code(folder: Path) -> None:
    """Refuse a model whose architecture exists only as code shipped with it (``auto_map``):
    muscle-llm never runs such code (no ``trust_remote_code``)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MuscleError(f"{folder / 'config.json'}: unreadable ({exc})") from None
    if "auto_map" in cfg and cfg.get("model_type") not in CONFIG_MAPPING:
        raise MuscleError(
            f"{folder}: model type {cfg.get('model_type')!r} needs the custom code its folder "
            "ships (auto_map); muscle-llm does not run remote code: use a model transformers "
            "implements"
        )


@contextlib.contextmanager
def loading(what: str, path: str) -> Iterator[None]:
    """Loader failures (unreadable or truncated files, the hub unreachable, a missing package)
    as one line naming the option and the path."""
    from safetensors import SafetensorError

    try:
        yield
    except MuscleError:
        raise
    except ImportError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "; pip install muscle-llm[gguf]" if "gguf" in str(exc).lower() else ""
        raise MuscleError(f"{what} {path}: cannot load ({first[:200]}){hint}") from None
    except (OSError, ValueError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MuscleError(
            f"{what} {path}: cannot load ({first[:200]}); check the files, or pass a local folder"
        ) from None


def load_tokenizer(base: str, gguf_file: str | None = None) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (EOS if it has none)."""
    from transformers import AutoTokenizer

    base = os.path.expanduser(base)
    _check_base(base, gguf_file)
    kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(base, **kw)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_base_model(
    base: str,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> PreTrainedModel:
    """A causal LM in evaluation mode on ``device`` (GGUF checkpoints are dequantised);
    safetensors weights only."""
    from transformers import AutoModelForCausalLM

    base = os.path.expanduser(base)
    _check_base(base, gguf_file)
    dev = resolve_device(device)
    kw: dict[str, Any] = {"dtype": resolve_dtype(dtype, dev)}
    if gguf_file:
        kw["gguf_file"] = gguf_file
    else:
        kw["use_safetensors"] = True
    model = AutoModelForCausalLM.from_pretrained(base, **kw)
    return model.to(dev).eval()


def _adapter_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MuscleError(f"{folder / 'adapter_config.json'}: unreadable ({exc})") from None
    return cfg if isinstance(cfg, dict) else {}


def check_adapter(adapter: str, option: str = "--adapter") -> Path:
    """The adapter folder, checked: it exists, holds ``adapter_config.json`` and safetensors
    weights (``adapter_model.safetensors``), not pickles, and is not the output of a
    ``muscle train`` run that has not finished (its final adapter may be missing or partial)."""
    p = Path(os.path.expanduser(adapter))
    if not p.is_dir():
        raise MuscleError(f"{option} {adapter}: adapter folder not found")
    if (p / "run_options.json").is_file() and not (p / "training.json").is_file():
        how = (
            "finish it with the same command and --resume, or pass one of its "
            "checkpoints/checkpoint-N folders"
            if any((p / "checkpoints").glob("checkpoint-*"))
            else "it stopped before its first checkpoint: run the same command again"
        )
        raise MuscleError(
            f"{option} {adapter}: its `muscle train` run has not finished (no training.json); "
            + how
        )
    if not (p / "adapter_config.json").is_file():
        raise MuscleError(f"{option} {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    if not (p / "adapter_model.safetensors").is_file():
        if pickles := _pickles(p):
            raise _pickle_error(f"{option} {adapter}", pickles)
        raise MuscleError(f"{option} {adapter}: no adapter_model.safetensors in the folder")
    return p


def adapter_config(adapter: str, option: str = "--adapter") -> dict[str, Any]:
    """The checked adapter folder's ``adapter_config.json``."""
    return _adapter_config(check_adapter(adapter, option))


def adapter_base_name(adapter: str) -> str | None:
    """``base_model_name_or_path`` recorded in a PEFT adapter folder."""
    return _adapter_config(check_adapter(adapter)).get("base_model_name_or_path")


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """transformers' own progress bars (loading weights, dequantising GGUF) on or off."""
    from transformers.utils import logging as hf_logging

    hide = not show and hf_logging.is_progress_bar_enabled()
    if hide:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            hf_logging.enable_progress_bar()


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
    """Wrap ``model`` with the PEFT adapter in ``adapter``.  An adapter trained on another
    base (shapes that differ, or weights with no place in this base) raises
    :class:`MuscleError`."""
    from peft import PeftModel, get_peft_model_state_dict
    from peft.utils.constants import EMBEDDING_LAYER_NAMES
    from safetensors import SafetensorError, safe_open

    folder = check_adapter(adapter)
    trained_on = adapter_base_name(adapter)
    kind = str(_adapter_config(folder).get("peft_type", "LORA")).upper()
    if kind in ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"):
        raise MuscleError(
            f"{adapter}: a {kind} adapter (virtual tokens), which muscle does not score or train; "
            "use a LoRA-style adapter (LoRA, DoRA, …) or merge it into the model"
        )

    def mismatch(detail: str) -> MuscleError:
        origin = f"; it was trained on {trained_on!r}" if trained_on else ""
        return MuscleError(
            f"{adapter}: adapter does not match base model "
            f"{getattr(model, 'name_or_path', '?')} ({detail[:400]}){origin}; pass the base "
            "model the adapter was trained on"
        )

    weights = folder / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), "pt") as fh:
            saved = set(fh.keys())
    except (OSError, SafetensorError) as exc:
        raise MuscleError(f"{weights}: unreadable ({str(exc)[:200]})") from None
    try:
        with peft_wrapping():
            wrapped = PeftModel.from_pretrained(
                model, str(folder), adapter_name=adapter_name, is_trainable=trainable
            )
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else "")
        raise mismatch(detail or type(exc).__name__) from None
    # Without "auto", which looks the adapter's base up (on the hub if it is not a local folder)
    placed = set(
        get_peft_model_state_dict(wrapped, adapter_name=adapter_name, save_embedding_layers=False)
    )
    # Full copies of the embeddings / output head that an adapter may carry (a resized
    # vocabulary) replace the base's and always have their place.
    # (PEFT saves a targeted layer's copy under ``.base_layer``.)
    copies = tuple(
        f".{name}{layer}.weight" for name in EMBEDDING_LAYER_NAMES for layer in ("", ".base_layer")
    )
    extra = sorted(k for k in saved - placed if not k.endswith(copies))
    missing = sorted(placed - saved)
    if extra or missing:  # PEFT drops weights with no place in the base, and keeps quiet
        detail = (
            f"{len(extra)} of its weights have no place in the base, e.g. {extra[0]}"
            if extra
            else f"{len(missing)} adapter weights of the base are not in it, e.g. {missing[0]}"
        )
        raise mismatch(detail)
    return wrapped


def load_model(
    base: str,
    adapter: str | None = None,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Base model (plus optional adapter) and its tokenizer, ready for evaluation; loading
    failures are one-line errors naming ``--model`` / ``--adapter``."""
    with loading("--model", base):
        tok = load_tokenizer(base, gguf_file)
        model = load_base_model(base, gguf_file=gguf_file, dtype=dtype, device=device)
    if adapter:
        with loading("--adapter", adapter):
            model = attach_adapter(model, adapter).eval()
    return model, tok


# Spaces, digits, punctuation, a newline and non-ASCII: encoded with the special tokens each
# tokenizer adds (a BOS, an EOS), so that differing settings show beside an equal vocabulary.
_PROBE = "Question: Is 12 + 30 = 42?\n Answer:  yes, naïve café 😀"


def _encoding_difference(
    old: PreTrainedTokenizerBase, a: list[int], new: PreTrainedTokenizerBase, b: list[int]
) -> str:
    """How two encodings of the same text differ, in tokens: one's extra tokens around the
    text, else the first differing position."""
    for side, short, long, tok in (("new", a, b, new), ("old", b, a, old)):
        n = len(long) - len(short)
        if n > 0 and long[n:] == short:
            return f"the {side} one adds {tok.convert_ids_to_tokens(long[:n])} before the text"
        if n > 0 and long[: len(short)] == short:
            return f"the {side} one adds {tok.convert_ids_to_tokens(long[len(short) :])} after it"
    i = next(k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return (
        f"from token {i}: {old.convert_ids_to_tokens(a[i : i + 3])} vs "
        f"{new.convert_ids_to_tokens(b[i : i + 3])}"
    )


def check_tokenizers_match(old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase) -> None:
    """Distillation between model versions needs identical tokenizers: the same vocabulary
    (same tokens, same ids) and the same encoding, special tokens included (a BOS one adds
    and the other not), of a probe text.  Raise :class:`MuscleError` naming the first
    difference otherwise."""
    va, vb = old.get_vocab(), new.get_vocab()
    if va == vb:
        a, b = old.encode(_PROBE), new.encode(_PROBE)
        if a == b:
            return
        raise MuscleError(
            f"old tokenizer {old.name_or_path or '(old)'} and new tokenizer "
            f"{new.name_or_path or '(new)'} have the same vocabulary but encode the same text "
            f"differently ({_encoding_difference(old, a, new, b)}); MUSCLE needs both models to "
            "see the same token ids: give them the same special-token settings "
            "(add_bos_token / add_eos_token in tokenizer_config.json, or tokenizer.json's "
            "post_processor)"
        )
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
