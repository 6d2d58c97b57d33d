"""Built-in tasks: loaders on the real files, lm-eval prompts/preprocessing, answer extraction,
spec files and bad input."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from muscle.errors import MuscleError
from muscle.tasks import get_task, list_tasks
from muscle.tasks.gsm8k import extract_flexible, extract_strict, normalize
from muscle.tasks.hellaswag import preprocess


def test_registry_lists_builtins_and_rejects_unknown():
    assert {"piqa", "hellaswag", "gsm8k", "samsum", "sst2"} <= set(list_tasks())
    with pytest.raises(MuscleError, match="available: gsm8k, hellaswag, piqa, samsum, sst2"):
        get_task("pika")


def test_registry_finds_task_modules_and_refuses_clashes(monkeypatch):
    """Every module of ``muscle.tasks`` is imported on the first lookup (no list to extend);
    a class registered under another name than its own, or a name taken twice, is refused."""
    import pkgutil

    import muscle.tasks as tasks
    from muscle.tasks import register_task
    from muscle.tasks.piqa import Piqa

    modules = {m.name for m in pkgutil.iter_modules(tasks.__path__)} - {"base", "spec"}
    assert {m for m in modules if not m.startswith("_")} == set(list_tasks())
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    with pytest.raises(ValueError, match="is named 'sst2', not 'piqa2'"):
        register_task("piqa2")(type("Odd", (Piqa,), {"name": "sst2"}))
    with pytest.raises(ValueError, match="'piqa' is registered twice: .*Piqa and .*OtherPiqa"):
        register_task("piqa")(type("OtherPiqa", (Piqa,), {}))
    assert register_task("piqa")(Piqa) is Piqa  # the same class again: no clash
    short = register_task("piqa-short")(type("PiqaShort", (Piqa,), {}))  # a variant
    assert get_task("piqa-short").name == "piqa-short" and get_task("piqa").name == "piqa"
    reloaded = type("Piqa", (Piqa,), {"__module__": Piqa.__module__})  # a module reloaded
    assert register_task("piqa")(reloaded) is reloaded and short.name == "piqa-short"


@pytest.mark.parametrize(
    ("task", "folder", "n", "first_prompt_start"),
    [
        ("piqa", "piqa", 1838, "Question: How do I ready a guinea pig cage"),
        ("hellaswag", "hellaswag", 10042, "Roof shingle removal: A man is sitting on a roof. He"),
        ("gsm8k", "gsm8k", 1319, "Question: Janet"),
        ("samsum", "samsum", 819, "Dialogue: Hannah: Hey, do you have Betty's number?"),
        ("sst2", "sst2", 872, "it 's a charming and often affecting journey . \nQuestion: Is"),
    ],
)
def test_real_files(shared_data: Path, task, folder, n, first_prompt_start):
    t = get_task(task)
    docs = t.load_docs(str(shared_data / folder))
    assert len(docs) == n
    assert t.doc_to_text(docs[0]).startswith(first_prompt_start)
    assert len({t.doc_id(d) for d in docs}) == n
    if t.output_type == "multiple_choice":
        k = {"piqa": 2, "hellaswag": 4, "sst2": 2}[task]
        assert all(len(t.doc_to_choices(d)) == k for d in docs)
        assert all(0 <= t.gold_index(d) < k for d in docs)


def test_piqa_labels_align(shared_data: Path):
    docs = get_task("piqa").load_docs(str(shared_data / "piqa"))
    labels = (shared_data / "piqa" / "valid-labels.lst").read_text().split()
    assert [d["label"] for d in docs] == [int(x) for x in labels]
    first = json.loads((shared_data / "piqa" / "valid.jsonl").open().readline())
    assert get_task("piqa").doc_to_choices(docs[0]) == [first["sol1"], first["sol2"]]
    gold = first["sol1"] if labels[0] == "0" else first["sol2"]
    assert get_task("piqa").doc_to_target(docs[0]) == gold  # the answer training learns


def test_hellaswag_preprocess_as_lm_eval():
    # lm-eval hellaswag/utils.py: strip, " [title]" -> ". ", drop [brackets], squeeze "  "
    assert preprocess(" How to cook [title] Boil water. [step] Stir  well ") == (
        "How to cook. Boil water. Stir well"
    )
    assert preprocess("[header] Intro") == " Intro"


def test_hellaswag_jsonl_and_text_formats_agree(tmp_path):
    row = {
        "ind": 7,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "endings": ["is using wrap.", "is ripping [title] tiles off.", "a", "b"],
        "label": "3",
    }
    (tmp_path / "hellaswag_val.jsonl").write_text(json.dumps(row) + "\n")
    t = get_task("hellaswag")
    (doc,) = t.load_docs(str(tmp_path / "hellaswag_val.jsonl"))
    assert t.doc_to_text(doc) == "Roof shingle removal: A man is sitting on a roof. He"
    assert t.doc_to_choices(doc)[1] == "is ripping. tiles off."
    assert t.gold_index(doc) == 3 and doc["_id"] == "7"
    text = "Roof shingle removal: A man is sitting on a roof. he\n3\n" + "\n".join(row["endings"])
    with bz2.open(tmp_path / "h.txt.bz2", "wt") as fh:
        fh.write(text + "\n")
    (tdoc,) = t.load_docs(str(tmp_path / "h.txt.bz2"))
    assert t.doc_to_text(tdoc) == t.doc_to_text(doc)
    assert t.doc_to_choices(tdoc) == t.doc_to_choices(doc)
    (tmp_path / "bad.txt").write_text(text + "\nextra line\n")
    with pytest.raises(MuscleError, match=r"bad.txt:7: expected 6 lines per item"):
        t.load_docs(str(tmp_path / "bad.txt"))


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("She has 3 apples.\n#### 1,234", "1,234", "1,234"),
        ("The answer is $18.", "[invalid]", "$18."),
        ("3 + 4 = 7", "[invalid]", "7"),
        ("no numbers", "[invalid]", "[invalid]"),
        ("#### -5 then 6", "-5", "6"),
    ],
)
def test_gsm8k_extraction_as_lm_eval(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


def test_gsm8k_scoring():
    t = get_task("gsm8k")
    doc = {"_id": "0", "question": "q", "answer": "work\n#### 1,234"}
    assert t.target(doc) == "1234" == normalize("$1,234.")
    r = t.score_generation(doc, " The total is $1,234.\n")
    assert r["correct"] and r["correct_flexible"] and not r["correct_strict"]
    assert r["prediction"] == "1234" and r["prediction_flexible"] == "$1,234."
    r = t.score_generation(doc, " so #### 1234 and then 5")
    assert r["correct_strict"] and not r["correct"]
    # lm-eval's gsm8k.yaml: these stops only (no blank line) and five shots by default
    assert t.generation_kwargs()["until"] == ["Question:", "</s>", "<|im_end|>"]
    assert t.default_num_fewshot == 5 and get_task("piqa").default_num_fewshot == 0


def test_gsm8k_keeps_an_answer_written_in_paragraphs():
    """A chain of thought in paragraphs (GPT-4's GSM8K id 7 style) is not cut at the first blank
    line, as version 1.0 did: the last number is the final answer, as lm-eval extracts it."""
    from muscle.evaluation.generate import truncate_at

    t = get_task("gsm8k")
    doc = {"_id": "7", "question": "q", "answer": "work\n#### 160"}
    text = " Each day she reads 80 pages.\n\nOver two days: 80 * 2 = 160 pages.\n\nQuestion: next"
    kept = truncate_at(text, t.generation_kwargs()["until"])
    assert "= 160 pages." in kept and "Question" not in kept
    assert t.score_generation(doc, kept)["correct"]
    assert not t.score_generation(doc, truncate_at(text, ["\n\n"]))["correct"]  # v1.0's cut


def test_samsum_rouge_and_field_names(tmp_path):
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"dialogue": "A: hi\nB: yo", "summary": "A greets B."})
        + "\n"
        + json.dumps({"context": "C: bye", "response": "C leaves."})
        + "\n"
    )
    t = get_task("samsum")
    docs = t.load_docs(str(tmp_path))
    assert t.doc_to_text(docs[1]) == "Dialogue: C: bye\nSummary:"
    r = t.score_generation(docs[0], " A greets B.")
    assert r["score"] == r["rouge1"] == pytest.approx(1.0)
    r = t.score_generation(docs[0], "A waves at B")  # unigrams a, b shared of 3 and 4
    assert r["rouge1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    r = t.score_generation(docs[0], "::::")  # nothing shared: every F is the float 0.0
    assert [type(r[k]) for k in ("score", "rouge1", "rouge2", "rougeL")] == [float] * 4
    assert r["rouge1"] == r["rouge2"] == r["rougeL"] == 0.0
    assert t.generation_kwargs()["no_repeat_ngram_size"] == 2
    assert {"Dialogue:", "Summary:", "</s>", "\n\n"} <= set(t.generation_kwargs()["until"])


def test_malformed_and_missing_files_name_file_and_line(tmp_path):
    (tmp_path / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n{oops\n')
    (tmp_path / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(MuscleError, match=r"valid.jsonl:2: malformed JSON"):
        get_task("piqa").load_docs(str(tmp_path))
    (tmp_path / "valid.jsonl").write_text('{"goal": "g", "sol1": "a"}\n')
    with pytest.raises(MuscleError, match=r"valid.jsonl:1: record has no field 'sol2'"):
        get_task("piqa").load_docs(str(tmp_path))
    (tmp_path / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n' * 3)
    with pytest.raises(MuscleError, match=r"valid-labels.lst:3: expected label 0 or 1"):
        get_task("piqa").load_docs(str(tmp_path))
    with pytest.raises(MuscleError, match="no GSM8K file for split 'test'"):
        get_task("gsm8k").load_docs(str(tmp_path))
    (tmp_path / "dev.jsonl").write_text('{"sentence": "s", "label": "2"}\n')
    with pytest.raises(MuscleError, match=r"dev.jsonl:1: label must be 0 or 1"):
        get_task("sst2").load_docs(str(tmp_path))


def test_hub_name_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(MuscleError, match="could not load dataset 'nyu-mll/glue'.*--data"):
        get_task("sst2").load_docs(None)


def test_unreachable_hub_fails_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # RFC 2606: never resolves
    with pytest.raises(MuscleError, match="hub is unreachable.*'nyu-mll/glue'.*--data"):
        get_task("sst2").load_docs(None)


def test_data_paths_and_splits_are_checked(tmp_path, monkeypatch):
    """A file given with a split the task has not is refused (the records would carry it);
    ``dir/typo`` beside an existing ``dir/`` is a missing path, not a hub dataset."""
    (tmp_path / "data").mkdir()
    f = tmp_path / "data" / "dev.jsonl"
    f.write_text('{"sentence": "good", "label": "1"}\n')
    sst2 = get_task("sst2")
    assert len(sst2.load_docs(str(f))) == 1
    with pytest.raises(MuscleError, match="unknown split 'bogus' for SST-2"):
        sst2.load_docs(str(f), "bogus")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MuscleError, match="data/typo: data file or folder not found"):
        sst2.load_docs("data/typo")


def write_spec(tmp_path: Path, body: str, rows: list[dict]) -> Path:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "spec.yaml").write_text(body)
    return tmp_path / "spec.yaml"


def test_spec_generation_exact_match(tmp_path):
    spec = write_spec(
        tmp_path,
        "name: arith\noutput_type: generate_until\ndata_files: {test: data.jsonl}\n"
        'prompt: "Q: {q}\\nA:"\nid_field: key\ntarget_field: a\nmetric: exact_match\n'
        'until: ["\\n"]\nmax_new_tokens: 8\n',
        [{"key": "k1", "q": "1+1", "a": "2"}, {"key": "k2", "q": "10*100", "a": "1,000"}],
    )
    t = get_task(str(spec))
    docs = t.load_docs()
    assert [d["_id"] for d in docs] == ["k1", "k2"] and t.name == "arith"
    assert t.doc_to_text(docs[0]) == "Q: 1+1\nA:"
    assert t.score_generation(docs[1], " it is 1000.")["correct"]
    assert not t.score_generation(docs[0], " 3")["correct"]
    assert t.generation_kwargs() == {"until": ["\n"], "max_new_tokens": 8}
    # --data: a file replaces the split's file; a folder is where the split's file is
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "data.jsonl").write_text('{"key": "z", "q": "2+2", "a": "4"}\n')
    assert [d["_id"] for d in t.load_docs(str(other))] == ["z"]
    assert [d["_id"] for d in t.load_docs(str(other / "data.jsonl"))] == ["z"]
    with pytest.raises(MuscleError, match="no data file for split 'train'"):
        t.load_docs(str(other), "train")


def test_spec_multiple_choice_label_text_and_fixed_choices(tmp_path):
    spec = write_spec(
        tmp_path,
        "name: yn\noutput_type: multiple_choice\ndata_files: {test: data.jsonl}\n"
        "prompt: '{s}?'\nchoices: [no, yes]\nlabel_field: y\n",
        [{"s": "sky blue", "y": "yes"}, {"s": "fire cold", "y": 0}],
    )
    t = get_task(str(spec))
    docs = t.load_docs()
    assert [t.gold_index(d) for d in docs] == [1, 0]
    assert [t.target(d) for d in docs] == [1, 0]


@pytest.mark.parametrize(
    ("body", "rows", "msg"),
    [
        ("name: x\noutput_type: classify\nprompt: p\n", [], "output_type must be"),
        ("name: x\noutput_type: multiple_choice\nprompt: p\n", [], "needs 'choices'"),
        (
            "name: x\noutput_type: generate_until\nprompt: p\ntarget_field: a\nbogus: 1\n",
            [],
            "unknown task spec field",
        ),
        (
            "name: x\noutput_type: generate_until\ndata_files: {test: data.jsonl}\n"
            "prompt: '{q}'\ntarget_field: a\n",
            [{"q": 1, "a": 2}, {"a": 3}],
            r"data.jsonl:2: prompt field 'q' not in the record \(fields: a\)$",
        ),
        (
            "name: x\noutput_type: multiple_choice\ndata_files: {test: data.jsonl}\n"
            "prompt: '{q}'\nchoices: [a, b]\nlabel_field: l\n",
            [{"q": 1, "l": 5}],
            r"data.jsonl:1: label index 5 out of range",
        ),
        ("name: [x\n", [], r"spec.yaml:\d+: malformed task spec"),
    ],
)
def test_spec_errors(tmp_path, body, rows, msg):
    spec = write_spec(tmp_path, body, rows)
    with pytest.raises(MuscleError, match=msg):
        get_task(str(spec)).load_docs()


GEN_SPEC = "name: g\noutput_type: generate_until\ntarget_field: a\n"
MC_SPEC = "name: m\noutput_type: multiple_choice\nlabel_field: l\n"


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (GEN_SPEC + 'prompt: "Q: {q\\nA:"', r"prompt 'Q: \{q\\nA:' is not a valid template"),
        (GEN_SPEC + "prompt: '{q!z}'", r"\{q!z\} is not a plain field name"),
        (GEN_SPEC + "prompt: '{q.upper}'", r"prompt '\{q.upper\}': \{q.upper\} is not a plain"),
        (MC_SPEC + "prompt: '{c[0]}'\nchoices_field: c", r"\{c\[0\]\} is not a plain field"),
        (GEN_SPEC + "prompt: 'Q: {}'", r"\{\} is positional"),
        (GEN_SPEC + "prompt: 'Q: {{q}}'", r"prompt 'Q: \{\{q\}\}' uses no record field"),
        (GEN_SPEC + "prompt: '{q}'\nanswer_regex: '#### ([0-9'", "not a valid regular expr"),
        (GEN_SPEC + "prompt: '{q}'\nanswer_regex: 5", r"answer_regex must be a string \(got 5\)"),
        (
            GEN_SPEC + "prompt: '{q}'\nuntil: 5",
            r"until must be a list of non-empty strings \(got 5",
        ),
        (GEN_SPEC + "prompt: '{q}'\nuntil: ['']", r"until must be a list of non-empty strings"),
        (GEN_SPEC + "prompt: '{q}'\nmax_new_tokens: lots", r'integer >= 1 \(got "lots"\)'),
        (GEN_SPEC + "prompt: '{q}'\nmax_new_tokens: -3", r"max_new_tokens must be .* \(got -3\)"),
        (GEN_SPEC + "prompt: '{q}'\nmax_new_tokens: true", r"max_new_tokens .* \(got true\)"),
        (GEN_SPEC + "prompt: '{q}'\nno_repeat_ngram_size: -1", r"no_repeat_ngram_size must be"),
        (GEN_SPEC + "prompt: '{q}'\ntarget_delimiter: 5", r"target_delimiter must be a string"),
        (GEN_SPEC + "prompt: '{q}'\nfewshot_delimiter: [a]", r"fewshot_delimiter must be a str"),
        (MC_SPEC + "prompt: '{q}'\nchoices: []", r"spec.yaml: choices is empty"),
        (MC_SPEC + "prompt: '{q}'\nchoices: 'no yes'", r"choices must be a list of strings"),
        (MC_SPEC + "prompt: '{q}'\nchoices: [a]\nchoices_field: c", r"not both"),
        (MC_SPEC.replace("l\n", "3\n") + "prompt: '{q}'\nchoices: [a]", r"label_field must be a"),
        (GEN_SPEC + "prompt: '{q}'\nid_field: [k]", r'id_field must be .* \(got \["k"\]\)'),
        (GEN_SPEC.replace("g\n", "[g]\n") + "prompt: '{q}'", r"name must be a non-empty str"),
        (GEN_SPEC + "prompt: '{q}'\nversion: true", r"version must be a string \(got true\)"),
        (GEN_SPEC + "prompt: '{q}'\ndata_files: {test: [a, b]}", r"data_files must be a file"),
        (MC_SPEC + "prompt: '{q}'\nchoices: [a]\nuntil: [x]", r"until apply only to output_type"),
        (GEN_SPEC + "prompt: '{q}'\nchoices: [a]", r"choices apply only to .*multiple_choice"),
    ],
    ids=lambda v: v.splitlines()[-1] if v.startswith("name:") else "",
)
def test_spec_field_errors_are_one_line_when_read(tmp_path, body, msg):
    """Each bad field is refused by the spec loader itself (before any data or model), in one
    line naming the spec file and the field."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(body + "\n")
    with pytest.raises(MuscleError, match=msg) as err:
        get_task(str(spec))
    assert str(err.value).startswith(f"{spec}: ") and "\n" not in str(err.value)


def test_spec_until_string_is_one_stop_and_ints_are_kept(tmp_path):
    spec = write_spec(
        tmp_path,
        GEN_SPEC + "prompt: '{q}'\nuntil: 'Question:'\nmax_new_tokens: 9\n"
        "no_repeat_ngram_size: 2\n",
        [],
    )
    assert get_task(str(spec)).generation_kwargs() == {
        "until": ["Question:"],
        "max_new_tokens": 9,
        "no_repeat_ngram_size": 2,
    }


def test_spec_record_with_empty_choices_is_named(tmp_path):
    spec = write_spec(
        tmp_path,
        MC_SPEC + "data_files: {test: data.jsonl}\nprompt: '{q}'\nchoices_field: c\n",
        [{"q": "a", "c": ["x", "y"], "l": 0}, {"q": "b", "c": [], "l": 0}],
    )
    with pytest.raises(MuscleError, match=r"data.jsonl:2: choices field 'c' is empty"):
        get_task(str(spec)).load_docs()


def test_cli_refuses_a_bad_spec_before_the_model(tmp_path, capsys):
    from muscle.cli import main

    spec = write_spec(
        tmp_path,
        GEN_SPEC + "data_files: {test: data.jsonl}\nprompt: '{q}'\nmax_new_tokens: -3\n",
        [{"q": "1+1", "a": "2"}],
    )
    out = tmp_path / "e.jsonl"
    args = ["eval", "--model", str(tmp_path / "no-model"), "--task", str(spec), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {spec}: max_new_tokens must be an integer >= 1 (got -3)"
    assert not list(tmp_path.glob("e.*"))


def test_spec_prompts_may_be_constant_or_empty(tmp_path):
    """lm-eval's minimal-pair tasks (BLiMP) score choices after an empty context."""
    for prompt in ("''", "'Which sentence is grammatical?'"):
        spec = tmp_path / "s.yaml"
        spec.write_text(MC_SPEC + f"prompt: {prompt}\nchoices: [a, b]\ntarget_delimiter: ''\n")
        assert get_task(str(spec)).doc_to_text({"l": 0}) == prompt.strip("'")
