"""Task registry.  ``get_task("piqa")`` or ``get_task("path/to/spec.yaml")``."""

from __future__ import annotations

from collections.abc import Callable

from muscle.errors import MuscleError
from muscle.tasks.base import Doc, Task

_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator adding a task to the registry under ``name`` (the class's ``name``).

    A module of this package that defines a task registers it on import: every module here
    is imported on the first lookup, so a new built-in task is one module and a test."""

    def deco(cls: type[Task]) -> type[Task]:
        own = cls.__dict__.get("name", name)  # a subclass may take another name
        if own != name:
            raise ValueError(f"task class {cls.__name__} is named {own!r}, not {name!r}")
        prev = _REGISTRY.get(name)
        where = (cls.__module__, cls.__qualname__)
        if prev is not None and (prev.__module__, prev.__qualname__) != where:  # not a reload
            raise ValueError(
                f"task {name!r} is registered twice: {prev.__module__}.{prev.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        cls.name = name
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
    """Import every task module of this package (their ``@register_task`` decorators run)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_") and mod.name not in ("base", "spec"):
            importlib.import_module(f"{__name__}.{mod.name}")


__all__ = ["Doc", "Task", "get_task", "list_tasks", "register_task"]
