"""Adapters (PEFT LoRA) in ``muscle eval``: equal to the merged model; wrong base -> one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _eval_tiny import build_tokenizer, one_thread, save_tiny  # noqa: F401
from muscle.cli import main
from test_eval_resume import assert_same_records


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    base = save_tiny(root / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():  # non-zero B so the adapter changes the outputs
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft.save_pretrained(root / "lora")
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), root / "lora"
    ).merge_and_unload()
    merged.save_pretrained(root / "merged")
    build_tokenizer().save_pretrained(root / "merged")
    tok = build_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(root / "other")
    tok.save_pretrained(root / "other")
    data = root / "piqa"
    data.mkdir()
    rows = [
        {"goal": f"How to fix a {w}?", "sol1": f"Glue the {w}.", "sol2": f"Bin the {w} now."}
        for w in ["jar", "bike", "pot", "lid", "tyre", "pan"]
    ]
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "valid-labels.lst").write_text("0\n1\n0\n1\n0\n1\n")
    return root, data


def run(root: Path, data: Path, out: Path, *extra: str) -> None:
    main(
        [
            "eval",
            "--task",
            "piqa",
            "--data",
            str(data),
            "--out",
            str(out),
            "--quiet",
            "--batch-size",
            "4",
            *extra,
        ]
    )


def test_adapter_equals_merged_model(setup, tmp_path):
    root, data = setup
    run(
        root,
        data,
        tmp_path / "a.jsonl",
        "--model",
        str(root / "base"),
        "--adapter",
        str(root / "lora"),
    )
    run(root, data, tmp_path / "m.jsonl", "--model", str(root / "merged"))
    run(root, data, tmp_path / "b.jsonl", "--model", str(root / "base"))
    assert_same_records(tmp_path / "a.jsonl", tmp_path / "m.jsonl")
    a = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    diff = max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))
    assert diff > 1e-2  # the adapter really changed the model
    s = json.loads((tmp_path / "a.jsonl.summary.json").read_text())["model"]
    assert s["adapter"] == str((root / "lora").resolve()) and len(s["adapter_sha256"]) == 64
    assert len(s["base_sha256"]) == 64


def test_adapter_on_wrong_base_is_one_line(setup, tmp_path, capsys):
    root, data = setup
    with pytest.raises(SystemExit) as exc:
        run(
            root,
            data,
            tmp_path / "x.jsonl",
            "--model",
            str(root / "other"),
            "--adapter",
            str(root / "lora"),
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "adapter does not match base model" in err and "size mismatch" in err
    assert not (tmp_path / "x.jsonl").exists()
    (root / "empty").mkdir(exist_ok=True)
    import shutil

    unfinished = root / "unfinished"  # a training run killed before its training.json
    shutil.copytree(root / "lora", unfinished, dirs_exist_ok=True)
    (unfinished / "run_options.json").write_text("{}")
    (unfinished / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    early = root / "early"  # killed before its first checkpoint
    shutil.copytree(root / "lora", early, dirs_exist_ok=True)
    (early / "run_options.json").write_text("{}")
    for folder, message in (
        ("nope", "nope: adapter folder not found"),
        ("empty", "not a PEFT adapter folder (no adapter_config.json)"),
        (
            "unfinished",
            "unfinished: its `muscle train` run has not finished (no training.json); "
            "finish it with the same command and --resume",
        ),
        (
            "early",
            "early: its `muscle train` run has not finished (no training.json); it "
            "stopped before its first checkpoint: run the same command again",
        ),
    ):
        with pytest.raises(SystemExit):
            out = tmp_path / "x.jsonl"
            run(root, data, out, "--model", str(root / "base"), "--adapter", str(root / folder))
        assert message in capsys.readouterr().err


def test_loading_an_adapter_prints_no_peft_internals(setup):
    """PEFT reads an attribute transformers 5 deprecates: that FutureWarning is not the user's."""
    import warnings

    from transformers import AutoModelForCausalLM

    from muscle.models import attach_adapter

    root = setup[0]
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        model = attach_adapter(base, str(root / "lora"))
    assert type(model).__name__.startswith("Peft")
    assert not [w for w in got if "is_gradient_checkpointing" in str(w.message)]


def test_loading_mistakes_are_one_line(setup, tmp_path, capsys, monkeypatch):
    """Every way a model or adapter folder can be wrong ends in one line and exit 2, before any
    output: pickles (safetensors only), truncated files, a missing tokenizer, an adapter given
    as the model, custom code, an adapter whose weights have no place in the base, a device
    this machine lacks."""
    import shutil

    from peft import LoraConfig, get_peft_model

    from _eval_tiny import build_model

    root, data = setup
    bad = tmp_path / "bad"

    def variant(name: str, src: Path = root / "base") -> Path:
        shutil.copytree(src, bad / name)
        return bad / name

    pickled = variant("pickled")
    from safetensors.torch import load_file

    weights = load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(weights, pickled / "pytorch_model.bin")
    truncated = variant("truncated")
    blob = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    no_tok = variant("no_tok")
    for f in no_tok.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    remote = variant("remote")
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="my_secret_arch", auto_map={"AutoModelForCausalLM": "m.MyLM"})
    (remote / "config.json").write_text(json.dumps(cfg))
    ad_pickled = variant("ad_pickled", root / "lora")
    ad_weights = load_file(ad_pickled / "adapter_model.safetensors")
    (ad_pickled / "adapter_model.safetensors").unlink()
    torch.save(ad_weights, ad_pickled / "adapter_model.bin")
    ad_truncated = variant("ad_truncated", root / "lora")
    blob = (ad_truncated / "adapter_model.safetensors").read_bytes()
    (ad_truncated / "adapter_model.safetensors").write_bytes(blob[:100])
    deeper = get_peft_model(  # same widths as the base, one layer more
        build_model(len(build_tokenizer()), layers=3),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    deeper.save_pretrained(bad / "ad_deeper")

    cases = [
        (["--model", str(pickled)], "weights are pickle files (pytorch_model.bin)"),
        (["--model", str(truncated)], "--model " + str(truncated) + ": cannot load"),
        (["--model", str(no_tok)], "no tokenizer files"),
        (["--model", str(root / "lora")], "a PEFT adapter, not a base model; pass it as --adapter"),
        (["--model", str(remote)], "muscle-llm does not run remote code"),
        (["--adapter", str(ad_pickled)], "weights are pickle files (adapter_model.bin)"),
        (["--adapter", str(ad_truncated)], "adapter_model.safetensors: unreadable"),
        (["--adapter", str(bad / "ad_deeper")], "have no place in the base, e.g."),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "no CUDA device is available here"))
    capsys.readouterr()  # the set-up's own warnings
    for extra, message in cases:
        out = tmp_path / "x.jsonl"
        with pytest.raises(SystemExit) as exc:
            run(
                root,
                data,
                out,
                *(["--model", str(root / "base")] if "--model" not in extra else []),
                *extra,
            )
        err = capsys.readouterr().err
        assert exc.value.code == 2, (extra, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (extra, err)
        assert message in err, (extra, err)
        assert not list(tmp_path.glob("x.jsonl*")), extra
    monkeypatch.setenv("HOME", str(root))  # "~" is the user's home, also inside --model=~/...
    run(root, data, tmp_path / "home.jsonl", "--model", "~/base", "--adapter", "~/lora")
    summary = json.loads((tmp_path / "home.jsonl.summary.json").read_text())["model"]
    assert summary["base"] == str((root / "base").resolve()) and summary["base_sha256"]
    assert summary["adapter"] == str((root / "lora").resolve()) and summary["adapter_sha256"]


def test_adapters_with_embedding_copies_load_without_the_hub(setup, tmp_path, monkeypatch):
    """Adapters that carry full output-head/embedding weights (save_embedding_layers,
    modules_to_save) have their place in the base; checking that never asks the hub, even when
    the adapter names a base that is not a local folder."""
    import peft.utils.save_and_load as save_and_load
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from muscle.models import attach_adapter

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(save_and_load, "check_file_exists_on_hf_hub", no_hub)
    root = setup[0]
    variants = {
        "emb": (dict(target_modules=["q_proj"]), dict(save_embedding_layers=True)),
        "mts": (dict(target_modules=["q_proj"], modules_to_save=["lm_head"]), {}),
        # LoRA on the head and the embeddings: PEFT saves their copies under .base_layer
        "head": (
            dict(target_modules=["q_proj", "lm_head", "embed_tokens"]),
            dict(save_embedding_layers=True),
        ),
    }
    for name, (lora, save) in variants.items():
        base = AutoModelForCausalLM.from_pretrained(root / "base")
        peft = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, **lora))
        peft.save_pretrained(tmp_path / name, **save)
        cfg_path = tmp_path / name / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": "someorg/some-base"}))
        model = attach_adapter(
            AutoModelForCausalLM.from_pretrained(root / "base"), str(tmp_path / name)
        )
        assert type(model).__name__.startswith("Peft")


def test_prompt_learning_adapters_are_refused(setup, tmp_path):
    """Virtual-token adapters would be skipped by the packed scoring: one clear line."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from muscle.errors import MuscleError
    from muscle.models import attach_adapter

    root = setup[0]
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    get_peft_model(base, cfg).save_pretrained(tmp_path / "pt")
    with pytest.raises(MuscleError, match="PROMPT_TUNING adapter .* use a LoRA-style adapter"):
        attach_adapter(AutoModelForCausalLM.from_pretrained(root / "base"), str(tmp_path / "pt"))


def test_a_model_folder_holding_an_adapter_is_refused(setup, tmp_path, capsys):
    """transformers applies an adapter_config.json found in a model folder on loading it
    (twice, on merged weights): refused in one line, exit 2."""
    import shutil

    root, data = setup
    both = tmp_path / "merged_with_adapter"
    shutil.copytree(root / "merged", both)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(root / "lora" / f, both / f)
    with pytest.raises(SystemExit) as exc:
        run(root, data, tmp_path / "x.jsonl", "--model", str(both))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "holds a model and a PEFT adapter" in err
    assert "Traceback" not in err and not (tmp_path / "x.jsonl").exists()


def fake_hub_cache(monkeypatch, cache: Path, repo_id: str, *, offline: bool) -> Path:
    """A local hub cache (``models--ID/refs/main`` naming a ``snapshots/SHA`` folder) holding a
    tiny model as ``repo_id``; the hub offline or not."""
    from huggingface_hub import constants

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id}"
    save_tiny(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    return repo / "snapshots" / sha


def test_bare_hub_ids_load_from_the_local_cache(setup, tmp_path, monkeypatch, capsys):
    """A legacy hub id without an org (``gpt2``) loads from the local hub cache; a bare name
    that is neither a folder nor cached (a mistyped folder, most likely) is one line naming
    both possibilities, at once, offline or not."""
    from muscle.errors import MuscleError
    from muscle.models import load_model

    root, data = setup
    snapshot = fake_hub_cache(monkeypatch, tmp_path / "hub", "gpt2", offline=True)
    monkeypatch.chdir(tmp_path)  # no folder named gpt2 or mymodel here
    model, tok = load_model("gpt2", dtype="float32", device="cpu")
    assert model.config.vocab_size == len(tok) and tok.name_or_path == "gpt2"
    ids = torch.tensor([tok.encode("How to fix a jar?")])
    want = load_model(str(snapshot), dtype="float32", device="cpu")[0]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, want(input_ids=ids).logits)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(root, data, tmp_path / "x.jsonl", "--model", "mymodel")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "mymodel: no model folder of that name here, and no hub model 'mymodel' in the " in err
    assert str(tmp_path / "hub") in err

    from huggingface_hub import constants
    from transformers import AutoTokenizer

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    # Online too, at once: the hub is not asked (its retries take a minute without a network).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", no_hub)
    with pytest.raises(MuscleError, match=r"no hub model 'mymodel' in the local .*openai-commu"):
        load_model("mymodel")


def test_tokenizers_adding_different_special_tokens_are_refused(tmp_path):
    """Same vocabulary, but the new tokenizer adds a BOS the old does not: the two models would
    see different ids for the same text, so the pair is refused, in one line naming both."""
    import copy

    from transformers import PreTrainedTokenizerFast

    from muscle.errors import MuscleError
    from muscle.models import check_tokenizers_match, load_tokenizer

    old = build_tokenizer()
    new = PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(old.backend_tokenizer),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", add_bos_token=True,
    )  # fmt: skip
    assert old.get_vocab() == new.get_vocab()
    save_tiny(tmp_path / "v1")
    new.save_pretrained(save_tiny(tmp_path / "v2"))
    t1, t2 = load_tokenizer(str(tmp_path / "v1")), load_tokenizer(str(tmp_path / "v2"))
    check_tokenizers_match(t1, load_tokenizer(str(tmp_path / "v1")))
    for a, b, side in ((t1, t2, "new"), (t2, t1, "old")):
        with pytest.raises(MuscleError) as exc:
            check_tokenizers_match(a, b)
        msg = str(exc.value)
        assert f"old tokenizer {a.name_or_path} and new tokenizer {b.name_or_path} " in msg
        assert f"(the {side} one adds ['<s>'] before the text)" in msg
        assert "add_bos_token" in msg and "\n" not in msg
