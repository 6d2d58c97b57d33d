"""The several-values benchmark's data: ambiguous training labels, a tested value no label names,
and bases that know different facts (cheap: nothing is trained)."""

from __future__ import annotations

from collections import defaultdict

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_several_values")


def _value(statement: str) -> str:
    return statement.rstrip(".").split(" ")[-1]


def test_training_asks_each_question_twice_for_two_values_and_tests_the_third(bench):
    world = bench.make_world(0)
    train, test = bench.task_rows(world, 0)
    golds = defaultdict(list)
    for r in train:
        person = r["choices"][0].split(" ")[0]
        golds[(person, r["category"], r["question"])].append(_value(r["choices"][r["label"]]))
        others = [_value(c) for i, c in enumerate(r["choices"]) if i != r["label"]]
        assert not set(others) & set(world[person][r["category"]])  # distractors are wrong
    assert len(golds) == len(world) * len(bench.ATTRS)  # one wording per question, asked twice
    for (person, a, _q), values in golds.items():
        assert sorted(values) == sorted(world[person][a][:2])
    tested = set()
    for r in test:
        person = r["choices"][0].split(" ")[0]
        a = r["category"]
        assert _value(r["choices"][r["label"]]) == world[person][a][2]  # never a training gold
        assert not {_value(c) for c in r["choices"]} - {world[person][a][2]} & set(world[person][a])
        assert all(r["question"] != q for (p, b, q) in golds if (p, b) == (person, a))
        tested.add((person, a))
    assert len(tested) == len(test) == len(world) * len(bench.ATTRS)


def test_the_two_corpora_state_different_shares_of_the_facts(bench):
    world = bench.make_world(0)
    facts = {(n, a, v) for n in world for a in bench.ATTRS for v in world[n][a]}

    def stated(version: str) -> set:
        docs = set(bench.corpus(world, 0, version))
        return {
            (n, a, v)
            for n, a, v in facts
            if any(f.format(n=n, v=v) in docs for f in bench.CORPUS_FACT[a])
        }

    v1, v2 = stated("v1"), stated("v2")
    assert 0.65 < len(v1) / len(facts) < 0.75 and 0.75 < len(v2) / len(facts) < 0.85
    assert 0.5 < len(v1 & v2) / len(facts) < 0.62  # drawn independently: about 0.7 * 0.8
    k = bench.knowledge(0)
    assert k["v1_not_v2"] == pytest.approx(
        len({(n, a) for n, a, v in v1 - v2 if v == world[n][a][2]}) / (len(world) * 3)
    )
