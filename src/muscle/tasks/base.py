"""The task interface shared by evaluation, training and the demo scenario.

Conventions follow lm-evaluation-harness: a task turns a *doc* (one raw record) into
a prompt (``doc_to_text``) and either answer choices (multiple choice, scored by
log-likelihood of each continuation) or a generation request (greedy decoding until
a stop sequence, then scored).  ``target_delimiter`` separates prompt and
continuation, ``fewshot_delimiter`` separates few-shot examples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

Doc = dict[str, Any]
OutputType = Literal["multiple_choice", "generate_until"]
ScoreKind = Literal["discrete", "continuous"]


class Task(ABC):
    """One evaluation/training task.  Subclasses are small; see ``muscle.tasks.piqa``.

    A new built-in task is a module of ``muscle.tasks`` with a subclass decorated
    ``@register_task("name")`` (found on the first lookup), and a test in
    ``tests/test_tasks_builtin.py``.  The helpers in ``muscle.tasks._data`` read local files
    (``find_file``, ``iter_jsonl_docs``, ``require``) and hub datasets (``load_hub``)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1.0"
    output_type: ClassVar[OutputType]
    score_kind: ClassVar[ScoreKind] = "discrete"
    default_split: ClassVar[str] = "validation"
    default_num_fewshot: ClassVar[int] = 0  # lm-eval's ``num_fewshot`` of the task
    target_delimiter: ClassVar[str] = " "
    fewshot_delimiter: ClassVar[str] = "\n\n"
    # Multiple choice: the headline metric, "acc" or "acc_norm"; records' ``correct`` and
    # ``prediction`` follow it (what ``muscle compare`` reads).
    metric: str = "acc"

    # --- data -----------------------------------------------------------------------------
    @abstractmethod
    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        """Read the docs of ``split`` (``None``: ``default_split``) from ``data`` (a local
        file/folder in the task's original format; a hub dataset name where a network exists).
        Every doc carries a stable string ``doc["_id"]`` and may carry ``doc["_category"]``
        (logged as the record's ``category``).  The doc's other keys are hashed into each
        record's ``doc_hash``, which resume and ``muscle compare`` check: changing what a doc
        holds makes old records incomparable (bump ``version``).  Bad files raise
        ``MuscleError`` naming file and line."""

    def doc_id(self, doc: Doc) -> str:
        return str(doc["_id"])

    # --- prompts ----------------------------------------------------------------------------
    @abstractmethod
    def doc_to_text(self, doc: Doc) -> str:
        """The prompt, without the target delimiter."""

    def doc_to_target(self, doc: Doc) -> str:
        """The gold continuation text (without delimiter): used for few-shot examples and
        as the answer tokens in training.  Multiple choice: the gold choice (the default);
        generation tasks define it."""
        if self.output_type == "multiple_choice":
            return self.doc_to_choices(doc)[self.gold_index(doc)]
        raise NotImplementedError(f"task {self.name}: define doc_to_target")

    # --- multiple choice ----------------------------------------------------------------------
    def doc_to_choices(self, doc: Doc) -> list[str]:
        """Answer continuations (without delimiter).  Multiple-choice tasks only."""
        raise NotImplementedError

    def gold_index(self, doc: Doc) -> int:
        """Index of the correct choice.  Multiple-choice tasks only."""
        raise NotImplementedError

    # --- generation -----------------------------------------------------------------------------
    def generation_kwargs(self) -> dict[str, Any]:
        """``until`` (stop strings), ``max_new_tokens`` and extra ``generate`` kwargs."""
        return {"until": ["\n\n"], "max_new_tokens": 256}

    def score_generation(self, doc: Doc, generated: str) -> dict[str, Any]:
        """Score raw generated text.  Returns at least ``prediction`` and either ``correct``
        (discrete) or ``score`` (continuous), plus any extra fields to log."""
        raise NotImplementedError

    def target(self, doc: Doc) -> Any:
        """The gold answer as logged in per-instance records (choice index or answer)."""
        if self.output_type == "multiple_choice":
            return self.gold_index(doc)
        return self.doc_to_target(doc)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "output_type": self.output_type,
            "score_kind": self.score_kind,
        }
