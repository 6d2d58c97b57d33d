"""Building the scenario: files, specs, shared tokenizer, two bases, cache keyed by recipe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from muscle.errors import MuscleError
from muscle.scenarios import Scenario, ScenarioRecipe, build_scenario, cache_root
from muscle.scenarios.scenario import TASK_NAMES


@pytest.fixture(scope="session")
def tiny_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The tiny scenario, built once per session into a temporary cache."""
    cache = tmp_path_factory.getbasetemp() / "muscle-scenarios"
    return build_scenario(seed=0, size="tiny", cache_dir=cache)


def test_files_and_specs(tiny_scenario: Scenario) -> None:
    from muscle.tasks import get_task

    root = tiny_scenario.root
    assert (root / "recipe.json").is_file()
    assert json.loads((root / "recipe.json").read_text())["key"] == tiny_scenario.recipe.key()
    size = tiny_scenario.recipe.world
    expected = {"world-qa": size.qa_test, "world-math": size.math_test}
    expected["world-dialog"] = size.dialog_test
    for name in TASK_NAMES:
        task = get_task(tiny_scenario.task_spec(name))
        assert task.name == name
        test = task.load_docs(None, "test")
        assert len(test) == expected[name]
        train = task.load_docs(None, "train")
        assert {d["id"] for d in train}.isdisjoint({d["id"] for d in test})
    qa = tiny_scenario.task("world-qa")
    doc = qa.load_docs(None, "test")[0]
    assert qa.doc_to_text(doc) == f"Question: {doc['question']}\nAnswer:"
    assert qa.doc_to_target(doc) == doc["choices"][doc["label"]]
    math = tiny_scenario.task("world-math")
    d = math.load_docs(None, "test")[0]
    total = d["answer"].split("#### ")[1]
    assert math.score_generation(d, f" 1 + 2 = 3. #### {total}")["correct"]
    assert not math.score_generation(d, f" #### {int(total) + 1}")["correct"]


def test_bases_share_the_tokenizer_and_v2_is_larger(tiny_scenario: Scenario) -> None:
    from transformers import AutoConfig

    from muscle.models import check_tokenizers_match, load_tokenizer

    t1, t2 = load_tokenizer(tiny_scenario.base_v1), load_tokenizer(tiny_scenario.base_v2)
    check_tokenizers_match(t1, t2)
    assert t1.eos_token is not None and t1.pad_token is not None
    assert t1.pad_token_id != t1.eos_token_id
    text = "Question: Where does Alice live?\nAnswer: Paris"
    assert t1.decode(t1(text)["input_ids"]) == text  # byte-level BPE round-trips exactly
    c1, c2 = (
        AutoConfig.from_pretrained(tiny_scenario.base_v1),
        AutoConfig.from_pretrained(tiny_scenario.base_v2),
    )
    assert c1.model_type == c2.model_type == "llama"
    assert c1.vocab_size == c2.vocab_size == len(t1)
    log = tiny_scenario.pretraining_log()
    assert log["v2"]["parameters"] > log["v1"]["parameters"]
    assert log["v2"]["corpus_tokens"] > log["v1"]["corpus_tokens"]
    for v in ("v1", "v2"):
        assert list(Path(getattr(tiny_scenario, f"base_{v}")).glob("*.safetensors"))
        curve = log[v]["loss_curve"]
        assert curve[-1] < curve[0]  # pre-training made progress


def test_cached_build_is_reused(tiny_scenario: Scenario) -> None:
    stamp = (tiny_scenario.root / "recipe.json").stat().st_mtime_ns
    again = build_scenario(seed=0, size="tiny", cache_dir=tiny_scenario.root.parent)
    assert again.root == tiny_scenario.root
    assert (again.root / "recipe.json").stat().st_mtime_ns == stamp
    leftovers = [p for p in tiny_scenario.root.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers  # the temporary build folder was renamed or removed


def test_recipe_change_changes_the_key() -> None:
    r = ScenarioRecipe.preset("tiny", 0)
    assert r.key() == ScenarioRecipe.preset("tiny", 0).key()
    assert r.key() != ScenarioRecipe.preset("tiny", 1).key()
    assert r.key() != replace(r, v2=replace(r.v2, steps=r.v2.steps + 1)).key()
    assert r.key() != replace(r, world=replace(r.world, people=r.world.people + 1)).key()


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import muscle.scenarios.scenario as sc

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(sc, "train_tokenizer", boom)
    with pytest.raises(RuntimeError):
        build_scenario(seed=5, size="tiny", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MUSCLE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MUSCLE_CACHE")
    assert cache_root().name == "muscle"


def test_unknown_size_and_task(tiny_scenario: Scenario) -> None:
    with pytest.raises(MuscleError, match="unknown scenario size"):
        ScenarioRecipe.preset("huge", 0)
    with pytest.raises(MuscleError, match="unknown scenario task"):
        tiny_scenario.task_spec("piqa")


def test_stale_build_folders_are_removed(tmp_path: Path) -> None:
    import os
    import time

    from muscle.scenarios.scenario import remove_stale_builds

    stale = tmp_path / ".small-seed0-0123456789abcdef.x1y2z3"
    fresh = tmp_path / ".small-seed1-0123456789abcdef.a1b2c3"
    done = tmp_path / "small-seed0-0123456789abcdef"
    for p in (stale, fresh, done):
        (p / "bases").mkdir(parents=True)
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    os.utime(done, (old, old))
    assert remove_stale_builds(tmp_path) == [stale]
    assert not stale.exists() and fresh.is_dir() and done.is_dir()


def test_v2_can_continue_pre_training_from_v1(tiny_scenario: Scenario, tmp_path: Path) -> None:
    """``init_from="v1"``: v2 starts from v1's weights (at learning rate 0 it stays v1, tensor for
    tensor), then trains from there; an architecture other than v1's is refused in one line."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from muscle.scenarios.bases import pretrain_base

    def weights(sc: Scenario, v: str) -> dict:
        return load_file(next(Path(getattr(sc, f"base_{v}")).glob("*.safetensors")))

    r = ScenarioRecipe.preset("tiny", 0)
    frozen = replace(r.v1, init_from="v1", learning_rate=0.0, steps=3)
    sc = build_scenario(recipe=replace(r, v2=frozen), cache_dir=tmp_path)
    w1, w2 = weights(sc, "v1"), weights(sc, "v2")
    assert w1.keys() == w2.keys()
    assert all(w1[k].equal(w2[k]) for k in w1)
    log = sc.pretraining_log()
    assert log["v2"]["init_from"].endswith("v1") and log["v1"]["init_from"] is None
    moved = replace(r, v2=replace(frozen, learning_rate=3e-3))
    assert moved.key() not in (r.key(), sc.recipe.key())
    w2 = weights(build_scenario(recipe=moved, cache_dir=tmp_path), "v2")
    assert not all(w1[k].equal(w2[k]) for k in w1)  # it trains from there
    v1_dir = tiny_scenario.base_v1
    wider = replace(r.v1, hidden_size=r.v1.hidden_size * 2, steps=1)
    with pytest.raises(MuscleError, match="hidden_size"):
        pretrain_base(
            ["a b c"] * 50,
            AutoTokenizer.from_pretrained(v1_dir),
            wider,
            tmp_path / "x",
            seed=0,
            init_dir=Path(v1_dir),
        )
    with pytest.raises(MuscleError, match="only v2 may continue pre-training"):
        replace(r, v1=replace(r.v1, init_from="v1"))
    with pytest.raises(MuscleError, match="only v2 may continue pre-training"):
        replace(r, v2=replace(r.v2, init_from="v0"))
    with pytest.raises(MuscleError, match=r"scenario seed must be an int, got '1'"):
        build_scenario(seed="1", size="tiny")  # type: ignore[arg-type]


def test_own_update_example_runs_the_whole_python_flow(
    tiny_scenario: Scenario, tmp_path, capsys
) -> None:
    """``examples/own_update.py``: adapters, evaluations, the compatibility adapter and the
    comparison through the public API; its NFRs are a hand count of the records it wrote."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        from own_update import run
    finally:
        sys.path.pop(0)
    sc = tiny_scenario
    capsys.readouterr()
    compat = run(
        tmp_path, sc.base_v1, sc.base_v2, sc.task_spec("world-qa"), epochs=2, show_progress=False
    )
    assert "'loss'" not in capsys.readouterr().out  # quiet: no log dicts in place of the bars
    for name in ("a1", "a2", "c"):
        assert (tmp_path / name / "adapter_model.safetensors").is_file()
    rec = {
        n: [json.loads(x)["correct"] for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
        for n in ("v1", "v2", "v2c")
    }
    for pair, new in zip(compat["pairs"], ("v2", "v2c"), strict=True):
        nf = sum(o and not n for o, n in zip(rec["v1"], rec[new], strict=True))
        assert (pair["new"], pair["nf"]) == (new, nf)
    assert (tmp_path / "report" / "report.html").is_file()
