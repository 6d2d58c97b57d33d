"""The ablation benchmark's ``--equal-bases`` recipe (cheap: nothing is built)."""

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
