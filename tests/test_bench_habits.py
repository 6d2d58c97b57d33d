"""The habits benchmark: its scenario recipe, the habit task's files, and the oracle ensemble
(cheap: nothing is trained)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from muscle.scenarios.scenario import BASE_RECIPES, ScenarioRecipe
from muscle.scenarios.world import World


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_habits")


def test_recipe_adds_diary_lines_and_gives_v1_v2s_architecture(bench):
    r = bench.habits_recipe(4)
    shipped = ScenarioRecipe.preset("small", 4)
    assert r.key() != shipped.key()
    assert (r.world.v1_habit_lines, r.world.v2_habit_lines) == (10, 14)
    assert shipped.world.v1_habit_lines == shipped.world.v2_habit_lines == 0
    arch = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
    assert [getattr(r.v1, a) for a in arch] == [getattr(r.v2, a) for a in arch]
    assert r.v2 == BASE_RECIPES["small"][1] and r.v1.steps < r.v2.steps  # v2: more data


def test_shipped_bases_recipe_differs_from_the_shipped_scenario_only_by_the_diary(bench):
    r = bench.habits_recipe(4, "shipped")
    shipped = ScenarioRecipe.preset("small", 4)
    assert (r.v1, r.v2) == (shipped.v1, shipped.v2) and r.v1 != r.v2
    assert dataclasses.replace(r.world, v1_habit_lines=0, v2_habit_lines=0) == shipped.world
    assert r.key() not in (shipped.key(), bench.habits_recipe(4).key())


def test_adapter_recipe_is_the_demos_with_the_papers_compat_lr_and_alpha_ratio(bench):
    from muscle.scenarios.demo import AdapterRecipe

    demo = AdapterRecipe()
    r = bench.adapter_recipe()
    assert (r.lora_r, r.lora_alpha, r.compat_epochs) == (8, 16, 10)  # habits.md's recipe
    assert (
        r.compat_learning_rate == r.learning_rate == demo.learning_rate != demo.compat_learning_rate
    )
    big = bench.adapter_recipe(60, 64)
    assert (big.lora_r, big.lora_alpha, big.compat_epochs) == (64, 128, 60)
    assert dataclasses.replace(big, lora_r=8, lora_alpha=16, compat_epochs=10) == r
    assert (r.num_train_epochs, r.early_stopping_patience) == (60, 4)  # the demo's early stop
    fixed = bench.adapter_recipe(15, 64, task_epochs=15)
    assert (fixed.num_train_epochs, fixed.early_stopping_patience) == (15, None)
    assert dataclasses.replace(fixed, num_train_epochs=60, early_stopping_patience=4) == (
        bench.adapter_recipe(15, 64)
    )


def _write_eval(path: Path, rows: list[tuple[list[float], int]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, (lls, target) in enumerate(rows):
            pred = max(range(len(lls)), key=lls.__getitem__)
            rec = {"doc_id": f"d{i}", "loglikelihoods": lls, "target": target}
            rec.update(prediction=pred, correct=pred == target)
            fh.write(json.dumps(rec) + "\n")


def test_oracle_ensemble_against_a_hand_count(bench, tmp_path):
    # item 0: both right; item 1: M1 right, M2 wrong, mean right (a flip the ensemble repairs);
    # item 2: M1 right, M2 confidently wrong, mean wrong (a flip it keeps); item 3: M1 wrong,
    # M2 right, mean right.
    v1 = [([-1, -5], 0), ([-1, -2], 0), ([-1, -2], 0), ([-3, -1], 1)]
    v2 = [([-1, -4], 0), ([-2, -1.5], 0), ([-9, -1], 0), ([-2, -1], 1)]
    _write_eval(tmp_path / "eval_v1.jsonl", v1)
    _write_eval(tmp_path / "eval_v2.jsonl", v2)
    got = bench.oracle_ensemble(tmp_path)
    # means: [-1,-4.5] -> 0 right; [-1.5,-1.75] -> 0 right; [-5,-1.5] -> 1 wrong; [-2.5,-1] -> 1
    assert got["acc"] == pytest.approx(3 / 4)
    assert got["nfr"] == pytest.approx(1 / 4)
    assert got["agree_v1"] == pytest.approx(3 / 4)  # differs from M1 on item 2 only
    assert bench.oracle_ensemble(tmp_path, weight=1.0)["nfr"] == 0.0  # M1 itself: no flips
    assert bench.agreement(tmp_path, "v2") == pytest.approx(2 / 4)  # M2 differs on items 1, 2


def test_habit_task_files_replace_world_qa_and_link_the_bases(bench, tmp_path):
    from muscle.scenarios.scenario import Scenario

    recipe = ScenarioRecipe.preset("tiny", 1)
    fake = tmp_path / "built"
    (fake / "bases").mkdir(parents=True)
    sc = bench.habits_scenario(Scenario(fake, recipe), tmp_path / "habits")
    assert (sc.root / "bases").resolve() == (fake / "bases").resolve()
    world = World.generate(1, recipe.world)

    def docs(task: str, split: str) -> list[dict]:
        rows = sc.task(task).load_docs(None, split)
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]

    assert docs("world-qa", "test") == world.habit_qa_items("test")
    assert docs("world-math", "train") == world.math_items("train")  # the others as shipped


@pytest.mark.parametrize("split,other", [("test", "train"), ("train", "test")])
def test_a_larger_split_extends_the_default_one(bench, tmp_path, split, other):
    from muscle.scenarios.scenario import Scenario

    recipe = ScenarioRecipe.preset("tiny", 2)
    fake = tmp_path / "built"
    (fake / "bases").mkdir(parents=True)
    small = bench.habits_scenario(Scenario(fake, recipe), tmp_path / "d")
    larger = {f"{split}_items": 120}
    big = bench.habits_scenario(Scenario(fake, recipe), tmp_path / "big", **larger)
    default = small.task("world-qa").load_docs(None, split)
    more = big.task("world-qa").load_docs(None, split)
    assert len(default) == getattr(recipe.world, f"qa_{split}") < len(more) == 120
    assert more[: len(default)] == default
    # the later items ask about the world's people, whose habits the bases know
    people = World.generate(2, recipe.world).people
    assert all(any(n in d["question"] for n in people) for d in more[len(default) :])
    # the other split is the default one
    assert big.task("world-qa").load_docs(None, other) == small.task("world-qa").load_docs(
        None, other
    )
    with pytest.raises(SystemExit, match=f"holds {len(default)} {split} items, not 120: use a "):
        bench.habits_scenario(Scenario(fake, recipe), tmp_path / "d", **larger)


def test_link_adapters_links_finished_runs_trained_on_these_bases_only(bench, tmp_path):
    def base(folder: Path, weights: bytes) -> str:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(weights)
        return str(folder)

    now = {"v1": base(tmp_path / "now" / "v1", b"one"), "v2": base(tmp_path / "now" / "v2", b"two")}
    same_v2 = base(tmp_path / "copy" / "v2", b"two")  # another folder, the same weights
    other_v2 = base(tmp_path / "old" / "v2", b"older")
    src = tmp_path / "a" / "run"
    runs = {
        "m_v1": {"model": now["v1"]},
        "c_none": {"old_model": now["v1"], "new_model": same_v2},
        "c_focal": None,  # unfinished: no training.json
    }
    for name, cfg in runs.items():
        (src / name).mkdir(parents=True)
        if cfg is not None:
            (src / name / "training.json").write_text(json.dumps({"config": cfg}))
    bench.link_adapters(src, tmp_path / "b" / "run", now)
    linked = sorted(p.name for p in (tmp_path / "b" / "run").iterdir())
    assert linked == ["c_none", "m_v1"]
    assert (tmp_path / "b" / "run" / "m_v1").resolve() == (src / "m_v1").resolve()
    (src / "m_v2").mkdir()
    (src / "m_v2" / "training.json").write_text(json.dumps({"config": {"model": other_v2}}))
    with pytest.raises(SystemExit, match="m_v2 was trained on .*old/v2, not on these bases"):
        bench.link_adapters(src, tmp_path / "c" / "run", now)
    # with the training docs' hash: runs trained on other docs (or not saying) are refused
    shutil.rmtree(src / "m_v2")
    for name in ("m_v1", "c_none"):
        record = json.loads((src / name / "training.json").read_text())
        record["data"] = {"hash": "same" if name == "m_v1" else "other"}
        (src / name / "training.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="c_none was trained on other training docs"):
        bench.link_adapters(src, tmp_path / "d" / "run", now, train_hash="same")
    record["data"]["hash"] = "same"
    (src / "c_none" / "training.json").write_text(json.dumps(record))
    bench.link_adapters(src, tmp_path / "e" / "run", now, train_hash="same")
    assert sorted(p.name for p in (tmp_path / "e" / "run").iterdir()) == ["c_none", "m_v1"]
    # with the compatibility recipe: compatibility adapters trained otherwise are left out
    record["config"].update(learning_rate=3e-3, num_train_epochs=15)
    (src / "c_none" / "training.json").write_text(json.dumps(record))
    for compat, want in (((3e-3, 15), ["c_none", "m_v1"]), ((1e-3, 15), ["m_v1"])):
        run = tmp_path / f"f{compat[0]}" / "run"
        bench.link_adapters(src, run, now, compat=compat)
        assert sorted(p.name for p in run.iterdir()) == want
    # --compat-select last: every compatibility adapter is trained anew
    bench.link_adapters(src, tmp_path / "g" / "run", now, compat=(3e-3, 15), skip_compat=True)
    assert sorted(p.name for p in (tmp_path / "g" / "run").iterdir()) == ["m_v1"]
