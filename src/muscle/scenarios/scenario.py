"""The built-in scenario as a library object: data files, task specs, tokenizer and bases.

``build_scenario(seed=0, size="small")`` returns a :class:`Scenario` whose folder (in the platform
cache, ``$MUSCLE_CACHE`` overrides) holds::

    recipe.json                 what was built, and its hash (the folder's key)
    corpus/v1.txt, v2.txt       the pre-training corpora (one document per line)
    tasks/<task>.yaml           task spec files + <task>/train.jsonl, test.jsonl
    bases/v1, bases/v2          Llama base models (safetensors) with the shared tokenizer
    bases.json                  pre-training logs (loss curves, parameters, seconds)

The folder is built in a temporary sibling and renamed into place, so it is either complete or
absent; a changed recipe gives a new key and a rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from muscle.errors import MuscleError
from muscle.io import make_dir, read_json, sha256_text, write_json, write_jsonl
from muscle.scenarios.bases import BaseRecipe, pretrain_base, train_tokenizer
from muscle.scenarios.world import SIZES, World, WorldSize

# Bump when generation or pre-training code changes what a recipe produces.
SCENARIO_VERSION = "2"

TASK_NAMES = ("world-qa", "world-math", "world-dialog")

TASK_SPECS: dict[str, dict[str, Any]] = {
    "world-qa": {
        "output_type": "multiple_choice",
        "prompt": "Question: {question}\nAnswer:",
        "id_field": "id",
        "choices_field": "choices",
        "label_field": "label",
        "metric": "acc",
        "description": "Facts about people (like PIQA): multiple choice by log-likelihood.",
    },
    "world-math": {
        "output_type": "generate_until",
        "prompt": "Question: {question}\nAnswer:",
        "id_field": "id",
        "target_field": "answer",
        "metric": "exact_match",
        "answer_regex": "#### (-?[0-9]+)",
        "until": ["\n", "Question:"],
        "max_new_tokens": 16,
        "description": "Addition word problems (like GSM8K): exact match after ####.",
    },
    "world-dialog": {
        "output_type": "generate_until",
        "prompt": "Dialogue: {dialogue}\nSummary:",
        "id_field": "id",
        "target_field": "summary",
        "metric": "rouge1",
        "until": ["\n", "Dialogue:"],
        "max_new_tokens": 16,
        "description": "Dialogue summaries needing a fact (like SAMSum): ROUGE-1.",
    },
}

BASE_RECIPES: dict[str, tuple[BaseRecipe, BaseRecipe]] = {
    "tiny": (
        BaseRecipe(hidden_size=32, num_layers=1, intermediate_size=64, steps=30, batch_size=8),
        BaseRecipe(hidden_size=48, num_layers=2, intermediate_size=96, steps=40, batch_size=8),
    ),
    "small": (
        BaseRecipe(hidden_size=64, num_layers=2, intermediate_size=192, steps=1000, batch_size=16),
        # v2: larger, trained on more data for longer (as Llama 2 after Llama 1)
        BaseRecipe(hidden_size=96, num_layers=3, intermediate_size=288, steps=2000, batch_size=16),
    ),
}
VOCAB_SIZES = {"tiny": 400, "small": 800}


def default_threads() -> int:
    """Torch threads for the scenario's tiny models: ``$MUSCLE_THREADS`` or 1.  One thread is as
    fast as many at this size, and several on a busy machine are many times slower."""
    return int(os.environ.get("MUSCLE_THREADS", "1"))


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (default :func:`default_threads`), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_root() -> Path:
    """``$MUSCLE_CACHE`` or the platform cache folder (e.g. ``~/.cache/muscle``)."""
    env = os.environ.get("MUSCLE_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("muscle"))


@dataclass(frozen=True)
class ScenarioRecipe:
    """Everything that determines the scenario's files."""

    seed: int = 0
    size: str = "small"
    world: WorldSize = field(default_factory=WorldSize)
    v1: BaseRecipe = field(default_factory=BaseRecipe)
    v2: BaseRecipe = field(default_factory=BaseRecipe)
    vocab_size: int = 800

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MuscleError(f"scenario seed must be an int, got {self.seed!r}")
        if not 0 <= self.seed < 2**32:
            raise MuscleError(f"--seed {self.seed}: must be in [0, 2**32 - 1]")
        if self.v1.init_from is not None or self.v2.init_from not in (None, "v1"):
            raise MuscleError(
                f"base v1 cannot start from {self.v1.init_from!r}, v2 from "
                f"{self.v2.init_from!r}: only v2 may continue pre-training, from 'v1'"
            )

    @classmethod
    def preset(cls, size: str, seed: int) -> ScenarioRecipe:
        if size not in SIZES:
            raise MuscleError(f"unknown scenario size {size!r}; use one of {', '.join(SIZES)}")
        v1, v2 = BASE_RECIPES[size]
        return cls(seed, size, SIZES[size], v1, v2, VOCAB_SIZES[size])

    def to_dict(self) -> dict[str, Any]:
        d = {"scenario_version": SCENARIO_VERSION, **asdict(self)}
        for v in ("v1", "v2"):  # unset: left out, so recipes from before it keep their key
            if d[v]["init_from"] is None:
                del d[v]["init_from"]
        return d

    def key(self) -> str:
        return sha256_text(json.dumps(self.to_dict(), sort_keys=True))[:16]


@dataclass(frozen=True)
class Scenario:
    """A built scenario: paths to its bases and task specs."""

    root: Path
    recipe: ScenarioRecipe

    @property
    def base_v1(self) -> str:
        return str(self.root / "bases" / "v1")

    @property
    def base_v2(self) -> str:
        return str(self.root / "bases" / "v2")

    @property
    def task_names(self) -> tuple[str, ...]:
        return TASK_NAMES

    def task_spec(self, name: str) -> str:
        """Path of the task's spec file (``get_task`` accepts it)."""
        if name not in TASK_NAMES:
            raise MuscleError(f"unknown scenario task {name!r}; use one of {', '.join(TASK_NAMES)}")
        return str(self.root / "tasks" / f"{name}.yaml")

    def task(self, name: str) -> Any:
        from muscle.tasks import get_task

        return get_task(self.task_spec(name))

    def pretraining_log(self) -> dict[str, Any]:
        return read_json(self.root / "bases.json")


def build_scenario(
    seed: int = 0,
    size: str = "small",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    recipe: ScenarioRecipe | None = None,
    progress: Callable[[str], None] | None = None,
) -> Scenario:
    """The scenario for ``(seed, size)`` (or an explicit ``recipe``), built on first use."""
    recipe = recipe or ScenarioRecipe.preset(size, seed)
    parent = Path(cache_dir).expanduser() if cache_dir else cache_root() / "scenarios"
    root = parent / f"{recipe.size}-seed{recipe.seed}-{recipe.key()}"
    if (root / "recipe.json").is_file():
        return Scenario(root, recipe)
    make_dir(parent, "--cache-dir" if cache_dir else "")  # else MUSCLE_CACHE or ~/.cache
    remove_stale_builds(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=parent))
    try:
        with torch_threads():
            _build(tmp, recipe, progress or (lambda _msg: None))
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first: keep theirs
            if not (root / "recipe.json").is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return Scenario(root, recipe)


def remove_stale_builds(parent: Path, max_age_s: float = 6 * 3600) -> list[Path]:
    """Delete temporary build folders (``.<name>.<random>``) left by killed builds: those not
    modified for ``max_age_s`` (a build takes minutes).  Returns what was removed."""
    import time

    removed = []
    for p in parent.glob(".*-seed*-*.*"):
        if p.is_dir() and time.time() - p.stat().st_mtime > max_age_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def write_task_files(world: World, tasks_dir: Path) -> None:
    """The three tasks' JSONL files and spec YAMLs."""
    makers = {"world-qa": world.qa_items, "world-math": world.math_items}
    makers["world-dialog"] = world.dialog_items
    for name in TASK_NAMES:
        sub = tasks_dir / name
        for split in ("train", "test"):
            write_jsonl(sub / f"{split}.jsonl", makers[name](split))
        spec = {
            "name": name,
            "version": f"{SCENARIO_VERSION}-seed{world.seed}",
            **TASK_SPECS[name],
            "data_files": {"train": f"{name}/train.jsonl", "test": f"{name}/test.jsonl"},
            "default_split": "test",
        }
        (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def _build(tmp: Path, recipe: ScenarioRecipe, progress: Callable[[str], None]) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bars between our messages
    world = World.generate(recipe.seed, recipe.world)
    corpora = {v: world.corpus(v) for v in ("v1", "v2")}
    (tmp / "corpus").mkdir()
    for v, docs in corpora.items():
        (tmp / "corpus" / f"{v}.txt").write_text(
            "\n".join(d.replace("\n", "\\n") for d in docs) + "\n"
        )
    write_task_files(world, tmp / "tasks")
    progress("training the shared tokenizer")
    tok = train_tokenizer(corpora["v1"] + corpora["v2"], recipe.vocab_size, tmp / "tokenizer")
    logs: dict[str, Any] = {}
    for i, v in enumerate(("v1", "v2")):
        base_recipe = recipe.v1 if v == "v1" else recipe.v2
        progress(f"pre-training base {v} ({base_recipe.steps} steps)")

        def report(step: int, total: int, loss: float, v: str = v) -> None:
            if step % max(1, total // 4) == 0:
                progress(f"  base {v}: step {step}/{total}, loss {loss:.3f}")

        logs[v] = pretrain_base(
            corpora[v],
            tok,
            base_recipe,
            tmp / "bases" / v,
            seed=recipe.seed * 100 + i,
            init_dir=tmp / "bases" / "v1" if base_recipe.init_from else None,
            progress=report,
        )
    write_json(tmp / "bases.json", logs)
    write_json(tmp / "recipe.json", {**recipe.to_dict(), "key": recipe.key()})
