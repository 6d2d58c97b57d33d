"""The ablation benchmark's ``--equal-bases`` / ``--continued-bases`` recipes and
``--test-items`` splits (cheap: nothing is trained)."""

from __future__ import annotations

import pytest

from muscle.scenarios.scenario import ScenarioRecipe


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_ablation")


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_equal_bases_builds_v1_as_v2_on_its_own_corpus(bench, size):
    shipped = ScenarioRecipe.preset(size, 3)
    r = bench.equal_bases_recipe(size, 3)
    assert shipped.v1 != shipped.v2  # the shipped update changes the architecture too
    assert r.v1 == r.v2 == shipped.v2
    # everything else, corpora included (they come from the world), is the shipped scenario's
    assert (r.seed, r.size, r.world, r.vocab_size) == (3, size, shipped.world, shipped.vocab_size)
    assert r.key() != shipped.key()  # its own cache folder


@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("arch", ["v1", "v2"])
def test_continued_bases_continue_v1_on_v2s_corpus(bench, size, arch):
    shipped = ScenarioRecipe.preset(size, 3)
    r = bench.continued_bases_recipe(size, 3, arch)
    base = getattr(shipped, arch)
    assert r.v1 == base and r.v2.init_from == "v1"
    keys = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "learning_rate")
    assert [getattr(r.v2, k) for k in keys] == [getattr(base, k) for k in keys]
    assert r.v2.steps == (base.steps if arch == "v1" else base.steps // 2)
    assert (r.seed, r.size, r.world, r.vocab_size) == (3, size, shipped.world, shipped.vocab_size)
    assert r.key() not in (shipped.key(), bench.equal_bases_recipe(size, 3).key())


def test_larger_test_splits_extend_the_default_ones_and_keep_the_training_splits(bench, tmp_path):
    from muscle.scenarios.scenario import TASK_NAMES, Scenario, write_task_files
    from muscle.scenarios.world import World

    recipe = ScenarioRecipe.preset("tiny", 2)
    fake = tmp_path / "built"
    (fake / "bases").mkdir(parents=True)
    write_task_files(World.generate(2, recipe.world), fake / "tasks")  # as the shipped build
    shipped = Scenario(fake, recipe)
    big = bench.larger_test_scenario(shipped, tmp_path / "big", 60)
    assert (big.root / "bases").resolve() == (fake / "bases").resolve()
    for task in TASK_NAMES:
        default = shipped.task(task).load_docs(None, "test")
        more = big.task(task).load_docs(None, "test")
        assert len(default) == 24 < len(more) == 60
        assert more[:24] == default
        train = big.task(task).load_docs(None, "train")
        assert train == shipped.task(task).load_docs(None, "train")
    with pytest.raises(SystemExit, match="holds 60 test items, not 100: use a new --work"):
        bench.larger_test_scenario(shipped, tmp_path / "big", 100)
