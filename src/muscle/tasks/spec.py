"""User tasks from a small YAML/JSON spec file.

.. code-block:: yaml

    name: my-task
    output_type: multiple_choice        # or generate_until
    data_files: {train: train.jsonl, test: test.jsonl}   # relative to the spec file
    default_split: test
    prompt: "Question: {question}\\nAnswer:"   # plain {field} names of the record
    id_field: id                        # optional; else the line index
    category_field: category            # optional; logged as each record's ``category``
                                        # (default: the record's ``category`` field if any)
    choices_field: choices              # MC: a list field (or `choices: [no, yes]`)
    label_field: label                  # MC: index (or the label text)
    target_field: answer                # generation: the gold text
    metric: exact_match                 # acc | acc_norm (MC); exact_match | rouge1
    answer_regex: "#### (-?[0-9.,]+)"   # optional extraction for exact_match
    until: ["\\n\\n"]                     # stop strings (one string: a single stop)
    max_new_tokens: 64
    no_repeat_ngram_size: 2             # optional, generation
    target_delimiter: " "               # between prompt and answer (default " ")
    fewshot_delimiter: "\\n\\n"           # between few-shot examples (default "\\n\\n")
    version: "1.0"                      # logged with every record (default: a hash of the spec)
    description: "..."                  # a note for people; never part of a prompt
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import yaml

from muscle.errors import MuscleError
from muscle.io import sha256_text
from muscle.tasks._data import iter_jsonl_docs, rouge_scores
from muscle.tasks.base import Doc, Task

_KNOWN = {
    "name",
    "version",
    "output_type",
    "data_files",
    "default_split",
    "prompt",
    "id_field",
    "category_field",
    "choices_field",
    "choices",
    "label_field",
    "target_field",
    "metric",
    "answer_regex",
    "until",
    "max_new_tokens",
    "target_delimiter",
    "fewshot_delimiter",
    "no_repeat_ngram_size",
    "description",
}
# Fields that mean something for one output type only (a stray one is a mistake, not a no-op).
_ONLY_FOR = {
    "multiple_choice": ("choices_field", "choices", "label_field"),
    "generate_until": ("target_field", "answer_regex", "until", "max_new_tokens",
                       "no_repeat_ngram_size"),
}  # fmt: skip
_NUMBER = re.compile(r"-?[0-9][0-9,]*\.?[0-9]*")


class SpecTask(Task):
    """A task defined by a spec file; see the module docstring for the fields."""

    name = "spec"
    output_type = "multiple_choice"

    def __init__(self, spec: dict[str, Any], source: Path) -> None:
        self.spec = spec
        self.source = source
        where = str(source)

        def need(key: str) -> Any:
            if spec.get(key) is None:
                raise MuscleError(f"{where}: task spec needs a {key!r} field")
            return spec[key]

        unknown = sorted(str(k) for k in set(spec) - _KNOWN)
        if unknown:
            raise MuscleError(
                f"{where}: unknown task spec field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_KNOWN))}"
            )
        need("name")
        self.name = _text(spec, "name", where)  # type: ignore[misc]
        otype = need("output_type")
        if otype not in ("multiple_choice", "generate_until"):
            raise MuscleError(
                f"{where}: output_type must be multiple_choice or generate_until, got {otype!r}"
            )
        self.output_type = otype  # type: ignore[misc]
        other = _ONLY_FOR["generate_until" if otype == "multiple_choice" else "multiple_choice"]
        stray = sorted(k for k in other if spec.get(k) is not None)
        if stray:
            raise MuscleError(
                f"{where}: {', '.join(stray)} apply only to output_type "
                f"{'generate_until' if otype == 'multiple_choice' else 'multiple_choice'}; "
                "remove them or change output_type"
            )
        need("prompt")
        self.prompt = _text(spec, "prompt", where, empty=True)  # "" : lm-eval's minimal pairs
        self.default_split = _text(spec, "default_split", where, "test")  # type: ignore[misc]
        tdelim = _text(spec, "target_delimiter", where, " ", empty=True)
        fdelim = _text(spec, "fewshot_delimiter", where, "\n\n", empty=True)
        self.target_delimiter, self.fewshot_delimiter = tdelim, fdelim  # type: ignore[misc]
        version = spec.get("version")
        if version is None:
            version = "spec-" + sha256_text(repr(sorted(spec.items())))[:12]
        elif isinstance(version, bool) or not isinstance(version, str | int | float):
            raise MuscleError(f"{where}: version must be a string (got {_show(version)})")
        self.version = str(version)  # type: ignore[misc]
        _text(spec, "id_field", where, "")
        _text(spec, "category_field", where, "")
        _text(spec, "description", where, "", empty=True)
        files = spec.get("data_files") or {}
        if isinstance(files, str):
            files = {self.default_split: files}
        if not isinstance(files, dict) or not all(
            isinstance(k, str | int) and isinstance(v, str) and v for k, v in files.items()
        ):
            raise MuscleError(
                f"{where}: data_files must be a file name or a mapping split -> file name "
                f"(got {_show(files)})"
            )
        self.data_files = {str(k): str(v) for k, v in files.items()}
        self.choices: list[str] | None = None
        if otype == "multiple_choice":
            self.metric = spec.get("metric", "acc")
            if self.metric not in ("acc", "acc_norm"):
                raise MuscleError(
                    f"{where}: multiple_choice metric must be acc or acc_norm, got {self.metric!r}"
                )
            if spec.get("choices") is None and spec.get("choices_field") is None:
                raise MuscleError(f"{where}: multiple_choice needs 'choices' or 'choices_field'")
            if spec.get("choices") is not None and spec.get("choices_field") is not None:
                raise MuscleError(
                    f"{where}: give either 'choices' (the same for every record) or "
                    "'choices_field' (a list field of each record), not both"
                )
            need("label_field")
            _text(spec, "label_field", where)
            _text(spec, "choices_field", where, "")
            if spec.get("choices") is not None:
                self.choices = _choices(spec["choices"], where)
        else:
            need("target_field")
            _text(spec, "target_field", where)
            self.metric = spec.get("metric", "exact_match")
            if self.metric not in ("exact_match", "rouge1"):
                raise MuscleError(
                    f"{where}: generation metric must be exact_match or rouge1, got {self.metric!r}"
                )
            if self.metric == "rouge1":
                self.score_kind = "continuous"  # type: ignore[misc]
        self.answer_regex = _regex(spec, "answer_regex", where)
        self.until = _until(spec, where)
        self.max_new_tokens = _int(spec, "max_new_tokens", where, 64, minimum=1)
        self.no_repeat_ngram_size = _int(spec, "no_repeat_ngram_size", where, 0, minimum=0)
        _check_template(self.prompt, where, "prompt")

    # --- data -----------------------------------------------------------------------------
    def load_docs(self, data: str | None = None, split: str | None = None) -> list[Doc]:
        split = split or self.default_split
        if data is not None and not Path(data).expanduser().is_dir():
            path = Path(data).expanduser()
        elif data is not None:  # a folder holding the spec's data files
            if split not in self.data_files:
                raise MuscleError(
                    f"{self.source}: no data file for split {split!r} in data_files "
                    f"({', '.join(self.data_files) or 'none'}) to look for in {data}"
                )
            path = Path(data).expanduser() / self.data_files[split]
        elif split in self.data_files:
            path = (self.source.parent / self.data_files[split]).resolve()
        else:
            raise MuscleError(
                f"{self.source}: no data file for split {split!r} in data_files "
                f"({', '.join(self.data_files) or 'none'}); pass --data"
            )
        if not path.is_file():
            raise MuscleError(f"{path}: data file not found")
        id_field = self.spec.get("id_field")
        docs: list[Doc] = []
        seen: set[str] = set()
        for idx, (lineno, obj) in enumerate(iter_jsonl_docs(path)):
            doc = dict(obj)
            if id_field:
                if id_field not in obj:
                    raise MuscleError(f"{path}:{lineno}: record has no id field {id_field!r}")
                doc["_id"] = str(obj[id_field])
            else:
                doc["_id"] = str(idx)
            if doc["_id"] in seen:
                raise MuscleError(f"{path}:{lineno}: duplicate id {doc['_id']!r}")
            seen.add(doc["_id"])
            category_field = self.spec.get("category_field")
            if category_field and category_field not in obj:
                raise MuscleError(
                    f"{path}:{lineno}: record has no category field {category_field!r}"
                )
            category = obj.get(category_field or "category")
            if category is not None:
                doc["_category"] = str(category)
            self._validate(doc, f"{path}:{lineno}")
            docs.append(doc)
        return docs

    def _validate(self, doc: Doc, where: str) -> None:
        try:
            self.doc_to_text(doc)
        except (KeyError, IndexError) as exc:
            raise MuscleError(
                f"{where}: prompt field {exc} not in the record "
                f"(fields: {', '.join(k for k in doc if not k.startswith('_'))})"
            ) from None
        if self.output_type == "multiple_choice":
            try:
                choices = self.doc_to_choices(doc)
                gold = self.gold_index(doc)
            except (KeyError, TypeError, ValueError) as exc:
                raise MuscleError(f"{where}: {exc}") from None
            if not 0 <= gold < len(choices):
                raise MuscleError(f"{where}: label index {gold} out of range 0..{len(choices) - 1}")
        else:
            field = self.spec["target_field"]
            if field not in doc:
                raise MuscleError(f"{where}: record has no target field {field!r}")

    # --- prompts ----------------------------------------------------------------------------
    def doc_to_text(self, doc: Doc) -> str:
        return self.prompt.format(**doc)

    def doc_to_choices(self, doc: Doc) -> list[str]:
        if self.choices is not None:
            return list(self.choices)
        field = self.spec["choices_field"]
        if field not in doc:
            raise KeyError(f"record has no choices field {field!r}")
        value = doc[field]
        if not isinstance(value, list):
            raise ValueError(f"choices field {field!r} must be a list (got {_show(value)})")
        if not value:
            raise ValueError(f"choices field {field!r} is empty; give at least one choice")
        return [str(c) for c in value]

    def gold_index(self, doc: Doc) -> int:
        field = self.spec["label_field"]
        if field not in doc:
            raise KeyError(f"record has no label field {field!r}")
        label = doc[field]
        choices = self.doc_to_choices(doc)
        if isinstance(label, bool):
            return int(label)
        if isinstance(label, int):
            return label
        text = str(label).strip()
        if text in choices:
            return choices.index(text)
        if text.lstrip("-").isdigit():
            return int(text)
        raise ValueError(f"label {label!r} is neither an index nor one of the choices {choices}")

    def doc_to_target(self, doc: Doc) -> str:
        if self.output_type == "multiple_choice":
            return super().doc_to_target(doc)
        return str(doc[self.spec["target_field"]])

    def target(self, doc: Doc) -> Any:
        if self.output_type == "multiple_choice":
            return self.gold_index(doc)
        if self.metric == "exact_match":
            return self._extract(self.doc_to_target(doc), fallback_number=False)
        return self.doc_to_target(doc)

    # --- generation -----------------------------------------------------------------------------
    def generation_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"until": list(self.until), "max_new_tokens": self.max_new_tokens}
        if self.no_repeat_ngram_size:
            kw["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kw

    def _extract(self, text: str, *, fallback_number: bool) -> str:
        """``answer_regex`` group 1 (first match), else the last number (predictions only),
        else the stripped text."""
        if self.answer_regex is not None:
            m = self.answer_regex.search(text)
            if m:
                return (m.group(1) if m.groups() else m.group(0)).strip().rstrip(".")
        if fallback_number:
            nums = _NUMBER.findall(text)
            if nums:
                return nums[-1].replace(",", "").rstrip(".")
        return text.strip()

    def score_generation(self, doc: Doc, generated: str) -> dict[str, Any]:
        if self.metric == "rouge1":
            return rouge_scores(self.doc_to_target(doc), generated)
        gold = self.target(doc)
        numeric = self.answer_regex is None and bool(_NUMBER.fullmatch(gold.replace(",", "")))
        pred = self._extract(generated, fallback_number=numeric or self.answer_regex is not None)
        if numeric:
            gold = gold.replace(",", "")
        return {"prediction": pred, "correct": pred.strip().lower() == gold.strip().lower()}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"spec": str(self.source), "metric": self.metric}


def _show(value: Any) -> str:
    """A spec value as the user wrote it (JSON-like), cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(
    spec: dict[str, Any], key: str, where: str, default: str | None = None, *, empty: bool = False
) -> str:
    """The string field ``key`` (``default`` when absent or null; ``empty``: may be "")."""
    value = spec.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, str) or (not value and not empty):
        kind = "a string" if empty else "a non-empty string"
        raise MuscleError(f"{where}: {key} must be {kind} (got {_show(value)})")
    return value


def _int(spec: dict[str, Any], key: str, where: str, default: int, *, minimum: int) -> int:
    """The integer field ``key`` (``default`` when absent or null), at least ``minimum``."""
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MuscleError(f"{where}: {key} must be an integer >= {minimum} (got {_show(value)})")
    return value


def _until(spec: dict[str, Any], where: str) -> list[str]:
    """Stop strings: a list of non-empty strings; a single string is a one-item list."""
    value = spec.get("until")
    if value is None:
        return ["\n\n"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MuscleError(
            f"{where}: until must be a list of non-empty strings (got {_show(value)})"
        )
    return list(value)


def _choices(value: Any, where: str) -> list[str]:
    """Fixed choices: a non-empty list of texts (numbers become text)."""
    if not isinstance(value, list) or not all(
        isinstance(c, str | int | float) and not isinstance(c, bool) for c in value
    ):
        raise MuscleError(f"{where}: choices must be a list of strings (got {_show(value)})")
    if not value:
        raise MuscleError(f"{where}: choices is empty; list at least one choice")
    return [str(c) for c in value]


def _regex(spec: dict[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    """The compiled regular expression of ``key`` (``None`` when absent or empty)."""
    value = spec.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MuscleError(f"{where}: {key} must be a string (got {_show(value)})")
    try:
        return re.compile(value)
    except re.error as exc:
        raise MuscleError(
            f"{where}: {key} {value!r} is not a valid regular expression ({exc})"
        ) from None


def _check_template(template: str, where: str, key: str) -> None:
    """Refuse a template ``str.format`` would reject or misuse: only plain ``{field}`` names
    of the record (no attribute/index access, conversion or format spec); a constant prompt
    is fine, but not lm-eval's Jinja ``{{field}}`` (a literal "{field}" to ``str.format``)."""
    bad = f"{where}: {key} {template!r}"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise MuscleError(
            f"{bad} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    names = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
    for name, spec, conv in names:
        field = "{" + name + ("!" + conv if conv else "") + (":" + spec if spec else "") + "}"
        if not name or name.isdigit():
            raise MuscleError(
                f"{bad}: {field} is positional; name a record field, e.g. {{question}}"
            )
        if "." in name or "[" in name or conv or spec:
            raise MuscleError(
                f"{bad}: {field} is not a plain field name; only {{field}} is allowed "
                "(no attribute or index access, conversion or format spec)"
            )
    if not names and re.search(r"\{\{\s*\w+\s*\}\}", template):  # lm-eval's Jinja {{field}}
        raise MuscleError(
            f"{bad} uses no record field; write fields as {{field}} "
            "(single braces: {{ and }} are literal braces)"
        )


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false, so ``choices: [no, yes]`` stays text."""


_SpecLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:bool"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_task_spec(path: str) -> SpecTask:
    """Read a task spec file (YAML or JSON)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MuscleError(f"{p}: task spec file not found")
    try:
        spec = yaml.load(p.read_text(encoding="utf-8"), Loader=_SpecLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise MuscleError(
            f"{p}{line}: malformed task spec ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(spec, dict):
        raise MuscleError(f"{p}: a task spec must be a mapping of fields")
    return SpecTask(spec, p.resolve())
