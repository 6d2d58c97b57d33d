"""The built-in scenario: a generated world, its tasks, a shared tokenizer and two bases.

``build_scenario(seed=0, size="small")`` builds (or loads from the cache) a :class:`Scenario`;
``muscle.scenarios.demo.run_demo`` (``muscle demo``) runs the whole MUSCLE pipeline on it.
Importing this package is cheap: torch and transformers load when something is built or trained.
"""

from muscle.scenarios.scenario import (
    TASK_NAMES,
    Scenario,
    ScenarioRecipe,
    build_scenario,
    cache_root,
)
from muscle.scenarios.world import SIZES, World, WorldSize

__all__ = [
    "SIZES",
    "TASK_NAMES",
    "Scenario",
    "ScenarioRecipe",
    "World",
    "WorldSize",
    "build_scenario",
    "cache_root",
]
