"""A seeded, procedurally generated "world" and the data drawn from it.

The world is a set of people with attributes (city, pet, job, colour, food), an addition table,
and short dialogues.  From it come

* a pre-training corpus (facts stated in *corpus* wordings, sums, dialogues with summaries);
* three tasks, one per kind the paper uses, each with a train and a test split:
  ``world-qa`` (multiple choice by log-likelihood, like PIQA), ``world-math`` (generation,
  exact match on the number after ``####``, like GSM8K) and ``world-dialog`` (generation,
  ROUGE-1, like SAMSum).

Test items ask about the same facts as training items, in *different* templates, so knowledge a
compatibility adapter learns on the training split can carry over to the test split (the paper's
situation), while the wording is new.  Everything is a pure function of ``(seed, size)``.

People also have *habits* (a seeded distribution over the places they go to).  Off by default
(``WorldSize.v1_habit_lines = 0``): with diary lines on, each base's corpus draws its own sample
of them ("On Monday, Alice went to the park."), and :meth:`World.habit_qa_items` is a
multiple-choice task whose gold ending is one draw from the person's habits, as HellaSwag's is one
plausible continuation of many — answers no model can fit (``benchmarks/bench_habits.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

NAMES = [
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Irene",
    "Jack",
    "Karen",
    "Leo",
    "Mia",
    "Noah",
    "Olivia",
    "Paul",
    "Quinn",
    "Rosa",
    "Sam",
    "Tina",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yara",
    "Zoe",
    "Adam",
    "Bella",
    "Chris",
    "Diana",
    "Ethan",
    "Fiona",
    "George",
    "Hannah",
    "Ivan",
    "Julia",
    "Kevin",
    "Laura",
    "Mark",
    "Nina",
    "Oscar",
    "Penny",
    "Ralph",
    "Sara",
    "Tom",
    "Ursula",
    "Vera",
    "Will",
    "Amy",
    "Ben",
    "Clara",
    "Dan",
    "Eva",
    "Fred",
    "Gina",
    "Hugo",
    "Ida",
    "Jon",
    "Kim",
    "Liam",
    "Mona",
    "Ned",
    "Omar",
    "Pia",
    "Rita",
    "Seth",
    "Tara",
    "Ugo",
    "Vince",
    "Walt",
    "Abby",
    "Brad",
    "Cleo",
    "Dean",
    "Elsa",
    "Finn",
    "Gus",
    "Hope",
    "Ian",
    "Jade",
    "Kyle",
    "Lena",
    "Max",
    "Nora",
    "Otto",
    "Pam",
]
CITIES = [
    "Paris",
    "Rome",
    "Oslo",
    "Lima",
    "Cairo",
    "Tokyo",
    "Dublin",
    "Madrid",
    "Berlin",
    "Vienna",
    "Prague",
    "Athens",
]
PETS = [
    "cat",
    "dog",
    "parrot",
    "rabbit",
    "turtle",
    "hamster",
    "goldfish",
    "pony",
    "lizard",
    "ferret",
]
JOBS = [
    "teacher",
    "doctor",
    "baker",
    "farmer",
    "pilot",
    "painter",
    "lawyer",
    "nurse",
    "chef",
    "driver",
]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"]
FOODS = ["apples", "rice", "bread", "cheese", "soup", "pasta", "fish", "cake", "beans", "plums"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
ITEMS = ["apples", "pears", "coins", "books", "stamps", "cards", "shells", "marbles"]
PLACES = ["park", "market", "library", "beach", "museum", "gym", "cafe", "zoo", "lake", "mall"]

ATTRS: dict[str, tuple[str, ...]] = {
    "city": tuple(CITIES),
    "pet": tuple(PETS),
    "job": tuple(JOBS),
    "color": tuple(COLORS),
    "food": tuple(FOODS),
}

# Corpus wordings of each fact (what pre-training sees).
CORPUS_FACT = {
    "city": ["{n} lives in {v}.", "{n} has a house in {v}.", "The home of {n} is in {v}."],
    "pet": ["{n} has a pet {v}.", "{n} owns a {v}.", "The pet of {n} is a {v}."],
    "job": ["{n} works as a {v}.", "{n} is a {v} by trade.", "The job of {n} is {v}."],
    "color": ["{n} likes the color {v}.", "The favorite color of {n} is {v}."],
    "food": ["{n} likes to eat {v}.", "The favorite food of {n} is {v}."],
}
# Question-answer documents in the corpus (for part of the facts): the bases learn that facts
# can be asked for, in wordings that are neither the task's training nor its test templates.
CORPUS_QA = {
    "city": "Where is the home of {n}?",
    "pet": "What animal is the pet of {n}?",
    "job": "What job does {n} have?",
    "color": "What color is the favorite of {n}?",
    "food": "What food is the favorite of {n}?",
}
# The answer statements of the multiple-choice task (one corpus wording per attribute).
QA_ANSWER = {a: forms[0] for a, forms in CORPUS_FACT.items()}
CORPUS_MATH = "{n} had {a} {i} and found {b} more. How many {i} does {n} have?"
# Question wordings: training templates differ from test templates.
QA_TRAIN = {
    "city": ["Where does {n} live?", "In which city is the home of {n}?"],
    "pet": ["What pet does {n} have?", "Which animal does {n} own?"],
    "job": ["What does {n} do for work?", "What is the job of {n}?"],
    "color": ["What color does {n} like?", "Which color is the favorite of {n}?"],
    "food": ["What does {n} like to eat?", "Which food is the favorite of {n}?"],
}
QA_TEST = {
    "city": ["Which city does {n} live in?", "{n} has a house in which city?"],
    "pet": ["What kind of pet does {n} keep?", "{n} owns which pet?"],
    "job": ["What is the work of {n}?", "{n} works as what?"],
    "color": ["What is the favorite color of {n}?", "{n} likes which color?"],
    "food": ["What food does {n} love?", "{n} likes to eat what?"],
}
MATH_TRAIN = [
    "{n} has {a} {i} and gets {b} more. How many {i} does {n} have now?",
    "There are {a} {i} in a box and {n} puts in {b} more. How many {i} are in the box?",
]
MATH_TEST = [
    "{n} buys {a} {i}, then buys {b} {i} more. How many {i} did {n} buy in all?",
    "A bag holds {a} {i}. {n} adds {b} {i}. How many {i} are in the bag?",
]
# Dialogues: a person tells a friend they will travel home / see their pet / go to work.
DIALOG_TRAIN = [
    ("{n}: I am going home on {d}. {m}: Have a safe trip, {n}!", "{n} goes home to {city} on {d}."),
    ("{m}: Are you busy on {d}? {n}: Yes, I have to work all day.", "{n} works as a {job} on {d}."),
    ("{n}: I must feed my pet on {d}. {m}: Sure, see you later.", "{n} feeds the {pet} on {d}."),
]
DIALOG_TEST = [
    (
        "{m}: When do you fly home? {n}: On {d}, I think. {m}: Nice.",
        "{n} goes home to {city} on {d}.",
    ),
    ("{n}: Sorry, {d} is a work day for me. {m}: No problem.", "{n} works as a {job} on {d}."),
    ("{m}: Can we meet on {d}? {n}: I need to feed my pet then.", "{n} feeds the {pet} on {d}."),
]
CORPUS_DIALOG = [
    ("{n}: I will visit my family on {d}. {m}: Good idea.", "{n} visits family in {city} on {d}."),
    ("{m}: Lunch on {d}? {n}: Only if they serve {food}.", "{n} wants {food} for lunch on {d}."),
]

# Habits: diary lines in the corpus, and the multiple-choice task drawn from them.
CORPUS_VISIT = "On {d}, {n} went to the {p}."
VISITS_TRAIN = ["Where did {n} go this week?", "Which places did {n} go to last week?"]
VISITS_TEST = ["What places did {n} visit?", "Where has {n} been lately?"]
VISITS_ANSWER = "{n} went to the {places}."  # places joined by ", then the "


@dataclass(frozen=True)
class WorldSize:
    """How big the generated world and data are."""

    people: int = 60
    max_addend: int = 12
    qa_train: int = 400
    qa_test: int = 200
    math_train: int = 400
    math_test: int = 200
    dialog_train: int = 400
    dialog_test: int = 200
    corpus_repeats: int = 6  # how often each fact is stated (in varying wordings)
    # The share of facts (and sums) each corpus states, drawn independently: v2's corpus is
    # larger, but it also drops a few facts v1 saw (a data update, not a superset).
    v1_fact_share: float = 0.7
    v2_fact_share: float = 0.8
    # Habits: Dirichlet concentration of each person's distribution (small: peaked), diary lines
    # per person in each corpus (0: none, the default), and places per multiple-choice ending.
    habit_alpha: float = 0.5
    v1_habit_lines: int = 0
    v2_habit_lines: int = 0
    visits_per_answer: int = 3


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(
        people=12,
        max_addend=5,
        qa_train=40,
        qa_test=24,
        math_train=40,
        math_test=24,
        dialog_train=40,
        dialog_test=24,
        corpus_repeats=2,
    ),
    "small": WorldSize(),
}


@dataclass
class World:
    """People with attributes and habits, and the texts and task records drawn from them."""

    seed: int
    size: WorldSize
    people: dict[str, dict[str, str]] = field(default_factory=dict)
    # name -> probabilities of going to each of PLACES
    habits: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def generate(cls, seed: int, size: WorldSize) -> World:
        rng = random.Random(f"world-{seed}")
        names = rng.sample(NAMES, k=min(size.people, len(NAMES)))
        people = {n: {a: rng.choice(vals) for a, vals in ATTRS.items()} for n in names}
        hrng = random.Random(f"habits-{seed}")
        habits = {}
        for n in names:  # a Dirichlet draw: peaked for habit_alpha < 1
            w = [hrng.gammavariate(size.habit_alpha, 1.0) for _ in PLACES]
            total = sum(w)
            habits[n] = [x / total for x in w]
        return cls(seed=seed, size=size, people=people, habits=habits)

    def place(self, rng: random.Random, name: str) -> str:
        """A place ``name`` goes to, drawn from their habits."""
        return rng.choices(PLACES, weights=self.habits[name])[0]

    # --- corpus -------------------------------------------------------------------------------
    def corpus(self, version: str) -> list[str]:
        """Pre-training documents (one sentence or dialogue each) for base ``v1`` or ``v2``."""
        rng = random.Random(f"corpus-{self.seed}-{version}")
        share = self.size.v1_fact_share if version == "v1" else self.size.v2_fact_share
        keep = random.Random(f"{version}-facts-{self.seed}")
        facts = [f for f in [(n, a) for n in self.people for a in ATTRS] if keep.random() < share]
        sentences = []
        for _ in range(self.size.corpus_repeats):
            for n, a in facts:
                sentences.append(rng.choice(CORPUS_FACT[a]).format(n=n, v=self.people[n][a]))
        m = self.size.max_addend
        sums = [(a, b) for a in range(m + 1) for b in range(m + 1) if keep.random() < share]
        for _ in range(self.size.corpus_repeats):
            for a, b in sums:
                form = rng.choice(["{a} + {b} = {c}.", "{a} plus {b} is {c}."])
                sentences.append(form.format(a=a, b=b, c=a + b))
        # Question-answer documents for about half of the stated facts and sums.
        names = list(self.people)
        for _ in range(max(1, self.size.corpus_repeats // 2)):
            for n, a in facts:
                if rng.random() < 0.5:
                    q = CORPUS_QA[a].format(n=n)
                    sentences.append(f"Question: {q}\nAnswer: {self.people[n][a]}")
            for a, b in sums:
                if rng.random() < 0.5:
                    q = CORPUS_MATH.format(n=rng.choice(names), a=a, b=b, i=rng.choice(ITEMS))
                    sentences.append(f"Question: {q}\nAnswer: {a} + {b} = {a + b}. #### {a + b}")
        docs = sentences  # one document each: packing re-shuffles them every epoch
        for _ in range(len(self.people) * self.size.corpus_repeats):
            n, mate = rng.sample(names, 2)
            dia, summ = rng.choice(CORPUS_DIALOG)
            f = self._fields(n, mate, rng.choice(DAYS))
            docs.append(f"Dialogue: {dia.format(**f)}\nSummary: {summ.format(**f)}")
        docs += self._diary(version)
        rng.shuffle(docs)
        return docs

    def _diary(self, version: str) -> list[str]:
        """Diary lines drawn from the habits: each version its own draws and its own count."""
        rng = random.Random(f"diary-{self.seed}-{version}")
        lines = self.size.v1_habit_lines if version == "v1" else self.size.v2_habit_lines
        return [
            CORPUS_VISIT.format(d=rng.choice(DAYS), n=n, p=self.place(rng, n))
            for n in self.people
            for _ in range(lines)
        ]

    def _fields(self, n: str, mate: str, day: str) -> dict[str, str]:
        return {"n": n, "m": mate, "d": day, **self.people[n]}

    # --- tasks --------------------------------------------------------------------------------
    def habit_qa_items(self, split: str) -> list[dict[str, Any]]:
        """Multiple choice over four endings (like HellaSwag's): each names places visited,
        drawn from the person's habits (the gold ending) or from three other people's."""
        rng = random.Random(f"visits-{self.seed}-{split}")
        templates = VISITS_TRAIN if split == "train" else VISITS_TEST
        count = self.size.qa_train if split == "train" else self.size.qa_test
        names = list(self.people)
        rows = []
        for i, n in enumerate(self._fact_order("visits", names, count)):
            others = rng.sample([m for m in names if m != n], 3)
            ends = [
                ", then the ".join(self.place(rng, p) for _ in range(self.size.visits_per_answer))
                for p in [*others, n]
            ]
            order = list(range(4))
            rng.shuffle(order)
            rows.append(
                {
                    "id": f"qa-{split}-{i}",
                    "question": rng.choice(templates).format(n=n),
                    "choices": [VISITS_ANSWER.format(n=n, places=ends[j]) for j in order],
                    "label": order.index(3),
                    "category": "visits",
                }
            )
        return rows

    def qa_items(self, split: str) -> list[dict[str, Any]]:
        """Multiple choice: four statements of the fact with different values (like the
        endings of HellaSwag), the person's true value among them."""
        rng = random.Random(f"qa-{self.seed}-{split}")
        templates = QA_TRAIN if split == "train" else QA_TEST
        count = self.size.qa_train if split == "train" else self.size.qa_test
        facts = self._fact_order("qa", [(n, a) for n in self.people for a in ATTRS], count)
        rows = []
        for i, (n, a) in enumerate(facts):
            gold = self.people[n][a]
            others = rng.sample([v for v in ATTRS[a] if v != gold], 3)
            values = [*others, gold]
            rng.shuffle(values)
            rows.append(
                {
                    "id": f"qa-{split}-{i}",
                    "question": rng.choice(templates[a]).format(n=n),
                    "choices": [QA_ANSWER[a].format(n=n, v=v) for v in values],
                    "label": values.index(gold),
                    "category": a,
                }
            )
        return rows

    def math_items(self, split: str) -> list[dict[str, Any]]:
        """Addition word problems; the answer is worked as ``a + b = c. #### c``."""
        rng = random.Random(f"math-{self.seed}-{split}")
        templates = MATH_TRAIN if split == "train" else MATH_TEST
        count = self.size.math_train if split == "train" else self.size.math_test
        m = self.size.max_addend
        pairs = self._fact_order(
            "math", [(a, b) for a in range(m + 1) for b in range(m + 1)], count
        )
        names = list(self.people)
        rows = []
        for i, (a, b) in enumerate(pairs):
            q = rng.choice(templates).format(n=rng.choice(names), a=a, b=b, i=rng.choice(ITEMS))
            rows.append(
                {
                    "id": f"math-{split}-{i}",
                    "question": q,
                    "answer": f"{a} + {b} = {a + b}. #### {a + b}",
                    "category": "carry" if a + b >= 10 else "small",
                }
            )
        return rows

    def dialog_items(self, split: str) -> list[dict[str, Any]]:
        """Two-person dialogues whose summaries need a fact about the speaker."""
        rng = random.Random(f"dialog-{self.seed}-{split}")
        templates = DIALOG_TRAIN if split == "train" else DIALOG_TEST
        count = self.size.dialog_train if split == "train" else self.size.dialog_test
        keys = [(n, k) for n in self.people for k in range(len(templates))]
        names = list(self.people)
        rows = []
        for i, (n, k) in enumerate(self._fact_order("dialog", keys, count)):
            mate = rng.choice([x for x in names if x != n])
            f = self._fields(n, mate, rng.choice(DAYS))
            dia, summ = templates[k]
            rows.append(
                {
                    "id": f"dialog-{split}-{i}",
                    "dialogue": dia.format(**f),
                    "summary": summ.format(**f),
                    "category": ("home", "work", "pet")[k],
                }
            )
        return rows

    def _fact_order(self, kind: str, keys: list[Any], count: int) -> list[Any]:
        """``count`` keys in a seeded order, cycling through all keys before repeating: the
        train and test splits cover the same facts (a different shuffle each split)."""
        rng = random.Random(f"order-{self.seed}-{kind}")
        base = list(keys)
        rng.shuffle(base)
        return [base[i % len(base)] for i in range(count)]
