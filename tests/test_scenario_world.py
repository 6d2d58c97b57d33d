"""The generated world: seeded, self-consistent, train/test in different wordings."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from muscle.scenarios.world import (
    ATTRS,
    CORPUS_FACT,
    CORPUS_QA,
    PLACES,
    QA_ANSWER,
    QA_TEST,
    QA_TRAIN,
    SIZES,
    VISITS_TEST,
    VISITS_TRAIN,
    World,
)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(3, SIZES["small"])


def _person(world: World, text: str) -> str:
    """The one person named in ``text``."""
    (name,) = [n for n in world.people if re.search(rf"\b{n}\b", text)]
    return name


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = World.generate(1, SIZES["tiny"]), World.generate(1, SIZES["tiny"])
    c = World.generate(2, SIZES["tiny"])
    assert a.people == b.people
    assert a.corpus("v2") == b.corpus("v2")
    assert a.qa_items("test") == b.qa_items("test")
    assert a.people != c.people
    assert a.math_items("train") != c.math_items("train")


def test_multiple_choice_labels_point_at_the_fact(world: World) -> None:
    for split in ("train", "test"):
        for row in world.qa_items(split):
            name, attr = _person(world, row["question"]), row["category"]
            gold = world.people[name][attr]
            assert row["choices"][row["label"]] == QA_ANSWER[attr].format(n=name, v=gold)
            assert len(set(row["choices"])) == 4
            values = {c.rstrip(".").split()[-1] for c in row["choices"]}
            assert values <= set(ATTRS[attr]) and len(values) == 4


def test_math_answers_are_the_sums_in_the_question(world: World) -> None:
    for split in ("train", "test"):
        for row in world.math_items(split):
            a, b = (int(x) for x in re.findall(r"\d+", row["question"]))
            assert row["answer"].endswith(f"#### {a + b}")
            assert row["answer"].startswith(f"{a} + {b} = {a + b}.")


def test_dialog_summaries_need_a_fact_about_the_speaker(world: World) -> None:
    for row in world.dialog_items("test"):
        speaker = row["summary"].split()[0]
        facts = world.people[speaker]
        want = {"home": facts["city"], "work": facts["job"], "pet": facts["pet"]}[row["category"]]
        assert want in row["summary"]
        assert want not in row["dialogue"]  # the dialogue does not give the fact away


def test_test_items_ask_known_facts_in_new_wordings(world: World) -> None:
    train, test = world.qa_items("train"), world.qa_items("test")
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for attr in ATTRS:  # the template sets are disjoint
        assert not set(QA_TRAIN[attr]) & set(QA_TEST[attr])
        assert not set(QA_TEST[attr]) & set(CORPUS_FACT[attr])
        assert CORPUS_QA[attr] not in QA_TEST[attr] + QA_TRAIN[attr]

    def fact(row: dict) -> tuple[str, str]:
        return _person(world, row["question"]), row["category"]

    assert {fact(r) for r in test} <= {fact(r) for r in train}
    train_pairs = {tuple(re.findall(r"\d+", r["question"])) for r in world.math_items("train")}
    test_pairs = {tuple(re.findall(r"\d+", r["question"])) for r in world.math_items("test")}
    assert test_pairs <= train_pairs
    train_q = {r["question"] for r in world.math_items("train")}
    assert not train_q & {r["question"] for r in world.math_items("test")}


def test_v2_corpus_states_more_facts_than_v1_but_not_all_of_them(world: World) -> None:
    def stated(version: str) -> set[tuple[str, str]]:
        text = "\n".join(world.corpus(version))
        out = set()
        for n, attrs in world.people.items():
            for a, v in attrs.items():
                forms = [f.format(n=n, v=v) for f in CORPUS_FACT[a]]
                if any(f in text for f in forms):
                    out.add((n, a))
        return out

    v1, v2 = stated("v1"), stated("v2")
    n = len(world.people) * len(ATTRS)
    assert 0.6 < len(v1) / n < 0.8 < len(v2) / n < 1.0
    assert v1 - v2  # a data update: v2 also lacks some facts v1 knew
    assert len(v1 & v2) > 0.5 * len(v1)


def test_ids_are_unique(world: World) -> None:
    for make in (world.qa_items, world.habit_qa_items, world.math_items, world.dialog_items):
        for split in ("train", "test"):
            ids = [r["id"] for r in make(split)]
            assert len(ids) == len(set(ids))


def test_habits_are_peaked_distributions(world: World) -> None:
    for p in world.habits.values():
        assert len(p) == len(PLACES) and min(p) >= 0 and math.isclose(sum(p), 1.0)
    modes = [max(p) for p in world.habits.values()]
    assert 0.2 < sum(modes) / len(modes) < 0.9  # peaked, but no habit is a fact


def test_habit_gold_ending_is_drawn_from_the_persons_habits(world: World) -> None:
    """Scored with the true habits (the best any model can do), the gold ending wins far more
    often than the 25 % of chance, and far from always: the answers cannot be fitted."""
    wins = []
    for row in world.habit_qa_items("test"):
        n = _person(world, row["question"])
        assert all(c.startswith(f"{n} went to the ") for c in row["choices"])

        def ll(choice: str, n: str = n) -> float:
            places = re.findall(r"the (\w+)", choice)
            assert len(places) == world.size.visits_per_answer
            return sum(math.log(world.habits[n][PLACES.index(p)]) for p in places)

        lls = [ll(c) for c in row["choices"]]
        wins.append(max(range(4), key=lls.__getitem__) == row["label"])
    assert 0.55 < sum(wins) / len(wins) < 0.95


def test_habit_items_ask_about_every_person_in_new_wordings(world: World) -> None:
    assert not set(VISITS_TRAIN) & set(VISITS_TEST)
    train, test = world.habit_qa_items("train"), world.habit_qa_items("test")
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    people = {_person(world, r["question"]) for r in train}
    assert {_person(world, r["question"]) for r in test} <= people == set(world.people)


def test_diary_lines_are_off_by_default_and_drawn_per_base(world: World) -> None:
    assert not [d for d in world.corpus("v1") if " went to the " in d]  # the shipped corpus
    size = dataclasses.replace(world.size, v1_habit_lines=10, v2_habit_lines=14)
    w = World.generate(world.seed, size)
    assert w.people == world.people and w.habits == world.habits
    diaries = {v: [d for d in w.corpus(v) if " went to the " in d] for v in ("v1", "v2")}
    assert len(diaries["v1"]) == 10 * len(w.people) and len(diaries["v2"]) == 14 * len(w.people)
    assert diaries["v1"] != diaries["v2"][: len(diaries["v1"])]  # independent draws
    # the diary follows the habits: a person's modal place is their most frequent diary place
    counts = {n: [0] * len(PLACES) for n in w.people}
    for d in diaries["v2"]:
        n, p = re.match(r"On \w+, (\w+) went to the (\w+)\.", d).groups()
        counts[n][PLACES.index(p)] += 1
    top = [
        PLACES.index(max(PLACES, key=lambda p, n=n: counts[n][PLACES.index(p)])) for n in w.people
    ]
    modal = [w.habits[n].index(max(w.habits[n])) for n in w.people]
    assert sum(t == m for t, m in zip(top, modal, strict=True)) > 0.5 * len(modal)
