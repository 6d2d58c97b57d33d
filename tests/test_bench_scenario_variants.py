"""The scenario-variants benchmark's task data: each variant has the property it is named for
(cheap: the world is generated, nothing is trained)."""

from __future__ import annotations

import re

import pytest

from muscle.scenarios.world import ATTRS, DAYS, SIZES, World


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_scenario_variants")


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(0, SIZES["small"])


def _fact(world: World, row: dict) -> tuple[str, str]:
    """(person, attribute) a statement-choice row asks about, read from its gold statement."""
    gold = row["choices"][row["label"]]
    name = next(n for n in world.people if gold.startswith(n + " ") or f" {n} " in gold)
    return name, row["category"]


def _gold_is_true(world: World, row: dict) -> bool:
    name, a = _fact(world, row)
    return row["choices"][row["label"]].rstrip(".").endswith(" " + world.people[name][a])


def test_facts_once_asks_each_fact_once_and_tests_training_facts(bench, world):
    train, test = bench.facts_once(world)
    facts = [_fact(world, r) for r in train]
    assert len(facts) == len(set(facts)) == len(world.people) * len(ATTRS)
    assert {_fact(world, r) for r in test} <= set(facts)
    assert all(_gold_is_true(world, r) for r in train + test)


def test_facts_disjoint_tests_facts_no_training_item_asks(bench, world):
    train, test = bench.facts_disjoint(world)
    train_facts = {_fact(world, r) for r in train}
    test_facts = [_fact(world, r) for r in test]
    assert not train_facts & set(test_facts)
    assert len(test) == 2 * len(set(test_facts))  # two wordings per fact
    assert all(_gold_is_true(world, r) for r in train + test)
    assert all(len(set(r["choices"])) == 4 for r in train + test)


def test_label_noise_changes_about_the_share_asked(bench, world):
    clean, _ = bench.shipped(world)
    noisy, _ = bench.label_noise(world, share=0.15)
    changed = [b for a, b in zip(clean, noisy, strict=True) if a["label"] != b["label"]]
    assert 0.10 * len(clean) < len(changed) < 0.20 * len(clean)
    assert not any(_gold_is_true(world, r) for r in changed)


def test_which_of_four_gold_alone_has_the_value(bench, world):
    train, test = bench.which_of_four(world)
    assert (len(train), len(test)) == (world.size.qa_train, world.size.qa_test)
    for r in train + test:
        (value,) = [v for v in ATTRS[r["category"]] if re.search(rf"\b{v}\b", r["question"])]
        has = [world.people[n][r["category"]] == value for n in r["choices"]]
        assert has == [i == r["label"] for i in range(4)]
        assert all(n in r["question"] for n in r["choices"])


def test_mixed_wording_keeps_values_and_gold(bench, world):
    train, test = bench.mixed_wording(world)
    for split, rows in (("train", train), ("test", test)):
        for r, orig in zip(rows, world.qa_items(split), strict=True):
            assert r["label"] == orig["label"] and r["question"] == orig["question"]
            for new, old in zip(r["choices"], orig["choices"], strict=True):
                name, value = old.split(" ")[0], old.rstrip(".").split(" ")[-1]  # "{n} ... {v}."
                assert re.search(rf"\b{name}\b", new) and re.search(rf"\b{value}\b", new)
    wordings = {c.split(" ")[0] == "The" for r in train for c in r["choices"]}
    assert wordings == {True, False}  # both name-first and "The ... of" wordings occur


def test_story_endings_extend_each_statement_with_a_meeting_drawn_per_ending(bench, world):
    for make, plain in (
        (bench.story_endings, bench.shipped),
        (bench.story_disjoint, bench.facts_disjoint),
    ):
        meetings, distinct_in_item = set(), 0
        for rows, orig in zip(make(world), plain(world), strict=True):
            for r, o in zip(rows, orig, strict=True):
                assert (r["label"], r["question"]) == (o["label"], o["question"])
                mates = []
                for new, old in zip(r["choices"], o["choices"], strict=True):
                    m = re.fullmatch(
                        rf"{re.escape(old.rstrip('.'))}, and meets (\w+) on (\w+)\.", new
                    )
                    assert m, new
                    assert m[1] in world.people and m[1] != old.split(" ")[0] and m[2] in DAYS
                    meetings.add((m[1], m[2]))
                    mates.append(m[1])
                distinct_in_item += len(set(mates)) > 1
        n_items = sum(len(rows) for rows in plain(world))
        assert distinct_in_item > 0.9 * n_items  # drawn per ending, not per item
        assert len(meetings) > 0.5 * len(world.people) * len(DAYS)
