"""Task registry.  ``get_task("piqa")`` or ``get_task("path/to/spec.yaml")``."""

from __future__ import annotations

from collections.abc import Callable

from muscle.errors import MuscleError
from muscle.tasks.base import Doc, Task

_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator adding a task to the registry under ``name``."""

    def deco(cls: type[Task]) -> type[Task]:
        _REGISTRY[name] = cls
        return cls

    return deco


def list_tasks() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """A registered task by name, or a user task from a YAML/JSON spec file path."""
    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name.endswith((".yaml", ".yml", ".json")):
        from muscle.tasks.spec import load_task_spec

        return load_task_spec(name)
    raise MuscleError(
        f"unknown task {name!r}; available: {', '.join(sorted(_REGISTRY))} "
        "(or a path to a task spec .yaml/.json)"
    )


def _load_builtin() -> None:
    # Importing the modules runs their @register_task decorators.
    import importlib

    for mod in ("piqa", "hellaswag", "gsm8k", "samsum", "sst2"):
        importlib.import_module(f"muscle.tasks.{mod}")


__all__ = ["Doc", "Task", "get_task", "list_tasks", "register_task"]
