"""``muscle compare``: every input format, joins, errors, outputs, gate and candidates."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

import muscle
from muscle.cli import main
from muscle.compare import compare_files
from muscle.errors import GateFailed, MuscleError
from muscle.io import sha256_text


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def naive_counts(old: list[bool], new: list[bool]) -> tuple[int, int]:
    nf = sum(1 for o, n in zip(old, new, strict=True) if o and not n)
    pf = sum(1 for o, n in zip(old, new, strict=True) if n and not o)
    return nf, pf


def random_outcomes(n: int, seed: int, p: float = 0.6) -> list[bool]:
    rnd = random.Random(seed)
    return [rnd.random() < p for _ in range(n)]


# --- generic format ------------------------------------------------------------------------
def test_generic_jsonl_correct_field_matches_naive_count(tmp_path):
    old, new = random_outcomes(300, 1), random_outcomes(300, 2, 0.7)
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": v} for i, v in enumerate(old)])
    # mixed truthy encodings in the new file
    enc = [1, 0, "true", "false", True, False]
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [{"id": i, "correct": enc[(i % 3) * 2 + (0 if v else 1)]} for i, v in enumerate(new)],
    )
    compat = compare_files([a, b], None)
    nf, pf = naive_counts(old, new)
    pair = compat["pairs"][0]
    assert (pair["nf"], pair["pf"], compat["n"]) == (nf, pf, 300)
    assert pair["nfr"] == pytest.approx(nf / 300)
    assert compat["kind"] == "discrete"
    assert compat["models"][0]["accuracy"] == pytest.approx(sum(old) / 300)
    assert compat["models"][0]["format"] == "generic"


def test_generic_csv_with_mapped_fields(tmp_path):
    old, new = random_outcomes(50, 3), random_outcomes(50, 4)
    for name, vals in (("old", old), ("new", new)):
        with open(tmp_path / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["qid", "ok", "subject"])
            for i, v in enumerate(vals):
                w.writerow([f"q{i}", int(v), "math" if i % 2 else "law"])
    compat = compare_files(
        [tmp_path / "old.csv", tmp_path / "new.csv"],
        None,
        id_field="qid",
        correct_field="ok",
        slice_by=["subject"],
    )
    assert (compat["pairs"][0]["nf"], compat["pairs"][0]["pf"]) == naive_counts(old, new)
    rows = {r["value"]: r for r in compat["slices"]["subject"]}
    for value, parity in (("math", 1), ("law", 0)):
        idx = [i for i in range(50) if i % 2 == parity]
        nf, pf = naive_counts([old[i] for i in idx], [new[i] for i in idx])
        assert rows[value]["n"] == len(idx)
        assert (rows[value]["pairs"][0]["nf"], rows[value]["pairs"][0]["pf"]) == (nf, pf)


def test_generic_prediction_and_target_exact_match(tmp_path):
    target = ["18", "1,000", "cat", "7", "3.5"]
    old_p = ["18.0", "1000", " cat ", "8", "3.5"]  # correct, correct, correct, wrong, correct
    new_p = ["17", "$1,000", "dog", "7", "3.50"]  # wrong, correct, wrong, correct, correct
    rows = lambda preds: [  # noqa: E731
        {"id": f"x{i}", "prediction": p, "target": t}
        for i, (p, t) in enumerate(zip(preds, target, strict=True))
    ]
    a = write_jsonl(tmp_path / "a.jsonl", rows(old_p))
    b = write_jsonl(tmp_path / "b.jsonl", rows(new_p))
    compat = compare_files([a, b], None)
    pair = compat["pairs"][0]
    assert (pair["nf"], pair["pf"], pair["both_correct"], pair["both_wrong"]) == (2, 1, 2, 0)
    assert pair["nfr_mc"] == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("prediction", "target", "equal"),
    [
        (".1", "0.10", True),
        ("1e3", "1000", True),
        ("-.5", "-0.5", True),
        ("$12,345,678", "12345678", True),
        ("1,5", "15", False),  # a comma only separates thousands: "1,5" is not 15
        ("1,5", "1,5", True),  # (it stays text, equal to itself)
        ("1.2.3", "1.23", False),
        ("e3", "1000", False),
    ],
)
def test_numbers_in_predictions_compare_as_numbers(tmp_path, prediction, target, equal):
    rows = [{"id": 0, "prediction": prediction, "target": target}]
    rows.append({"id": 1, "prediction": "x", "target": "x"})
    a = write_jsonl(tmp_path / "a.jsonl", rows)
    compat = compare_files([a, a], None)
    assert compat["models"][0]["accuracy"] == (1.0 if equal else 0.5)


def test_generic_score_is_continuous(tmp_path):
    old = [0.5, 0.2, 0.9, 0.4, 0.3, 0.6]
    new = [0.7, 0.2, 0.6, 0.45, 0.1, 0.6]
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "score": s} for i, s in enumerate(old)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": i, "score": s} for i, s in enumerate(new)])
    out = tmp_path / "out"
    compat = compare_files([a, b], out, epsilon=0.1)
    pair = compat["pairs"][0]
    assert compat["kind"] == "continuous" and compat["epsilon"] == 0.1
    d = [y - x for x, y in zip(old, new, strict=True)]
    assert pair["nf"] == sum(x < -0.1 for x in d) and pair["pf"] == sum(x > 0.1 for x in d)
    assert pair["mean_delta"] == pytest.approx(sum(d) / 6)
    assert compat["models"][1]["mean_score"] == pytest.approx(sum(new) / 6)
    flips = [json.loads(x) for x in (out / "flips.jsonl").read_text().splitlines()]
    assert [f["quadrant"] for f in flips] == [
        "gain" if x > 0.1 else "regression" if x < -0.1 else "unchanged" for x in d
    ]
    assert flips[0]["delta"] == pytest.approx(d[0])
    assert "Distribution of D" in (out / "report.html").read_text()


def test_nested_fields_and_line_ids_per_file_mapping(tmp_path):
    rows = [{"m1": {"ok": i % 3 == 0}, "m2": {"ok": i % 2 == 0}} for i in range(12)]
    f = write_jsonl(tmp_path / "both.jsonl", rows)
    compat = compare_files(
        [f, f], None, names=["m1", "m2"], id_field="@line", correct_field=["m1.ok", "m2.ok"]
    )
    old = [i % 3 == 0 for i in range(12)]
    new = [i % 2 == 0 for i in range(12)]
    assert (compat["pairs"][0]["nf"], compat["pairs"][0]["pf"]) == naive_counts(old, new)
    with pytest.raises(MuscleError, match="given 3 times for 2 files"):
        compare_files([f, f], None, id_field="@line", correct_field=["m1.ok", "m2.ok", "x"])


# --- the project's own format -----------------------------------------------------------------
def own_records(outcomes: list[bool], preds: list[str] | None = None, prompt: str = "Q{}") -> list:
    recs = []
    for i, ok in enumerate(outcomes):
        doc = {"question": f"q{i}", "answer": str(i)}
        recs.append(
            {
                "id": str(i),
                "doc_id": str(i),
                "task": "toy",
                "task_version": "1.0",
                "doc_hash": sha256_text(json.dumps(doc, sort_keys=True)),
                "prompt_hash": sha256_text(prompt.format(i)),
                "target": str(i),
                "prediction": preds[i] if preds else (str(i) if ok else "wrong"),
                "correct": ok,
                "category": "even" if i % 2 == 0 else "odd",
            }
        )
    return recs


def test_own_format_detected_and_compared(tmp_path):
    old, new = random_outcomes(40, 5), random_outcomes(40, 6)
    a = write_jsonl(tmp_path / "old.jsonl", own_records(old))
    b = write_jsonl(tmp_path / "new.jsonl", own_records(new))
    compat = compare_files([a, b], None, slice_by=["category"])
    assert compat["models"][0]["format"] == "muscle"
    assert (compat["pairs"][0]["nf"], compat["pairs"][0]["pf"]) == naive_counts(old, new)
    # wrong predictions are all "wrong" in both: every both-wrong instance is a same mistake
    assert compat["pairs"][0]["nfr_mc"] == pytest.approx(
        sum(1 for o, n in zip(old, new, strict=True) if o and not n) / 40
    )
    assert {r["value"] for r in compat["slices"]["category"]} == {"even", "odd"}


def test_own_format_prompt_hash_mismatch_is_refused(tmp_path):
    old = random_outcomes(10, 7)
    a = write_jsonl(tmp_path / "old.jsonl", own_records(old))
    recs = own_records(old)
    for i in (3, 8):
        recs[i]["prompt_hash"] = sha256_text("a different prompt")
    b = write_jsonl(tmp_path / "new.jsonl", recs)
    with pytest.raises(MuscleError, match=r"2 of 10 instances have a different prompt_hash"):
        compare_files([a, b], None)


# --- lm-evaluation-harness samples --------------------------------------------------------------
def lm_eval_generation_samples(outcomes: dict[str, list[bool]], doc_prefix: str = "") -> list:
    """A samples_gsm8k_*.jsonl as lm-eval writes it with --log_samples: one line per doc and
    filter; ``arguments``/``resps`` sanitised to strings; metric value under its plain name."""
    lines = []
    n = len(next(iter(outcomes.values())))
    for i in range(n):
        doc = {"question": f"{doc_prefix}How much is {i} + 1?", "answer": f"... #### {i + 1}"}
        prompt = f"Question: {doc['question']}\nAnswer:"
        for filt, vals in outcomes.items():
            ans = str(i + 1) if vals[i] else str(i + 2)
            lines.append(
                {
                    "doc_id": i,
                    "doc": doc,
                    "target": doc["answer"],
                    "arguments": {
                        "gen_args_0": {"arg_0": prompt, "arg_1": {"until": ["Question:"]}}
                    },
                    "resps": [[f"The answer is {ans}."]],
                    "filtered_resps": [ans],
                    "filter": filt,
                    "metrics": ["exact_match"],
                    "doc_hash": sha256_text(json.dumps(doc, indent=2, ensure_ascii=False)),
                    "prompt_hash": sha256_text(prompt),
                    "target_hash": sha256_text(doc["answer"]),
                    "exact_match": 1.0 if vals[i] else 0.0,
                }
            )
    return lines


def test_lm_eval_generation_samples_with_two_filters(tmp_path):
    n = 60
    old = {"strict-match": random_outcomes(n, 8), "flexible-extract": random_outcomes(n, 9)}
    new = {"strict-match": random_outcomes(n, 10), "flexible-extract": random_outcomes(n, 11)}
    a = write_jsonl(
        tmp_path / "samples_gsm8k_2024-01-01T00-00-00.jsonl", lm_eval_generation_samples(old)
    )
    b = write_jsonl(
        tmp_path / "samples_gsm8k_2024-02-01T00-00-00.jsonl", lm_eval_generation_samples(new)
    )
    with pytest.raises(
        MuscleError,
        match=r"several filters .*--metric \(exact_match,strict-match, exact_match,flexible",
    ):
        compare_files([a, b], None)
    for filt in ("strict-match", "flexible-extract"):
        compat = compare_files([a, b], None, metric=f"exact_match,{filt}")
        assert compat["models"][0]["format"] == "lm-eval"
        assert compat["models"][0]["source"] == f"exact_match,{filt}"
        pair = compat["pairs"][0]
        assert (pair["nf"], pair["pf"]) == naive_counts(old[filt], new[filt])
        assert compat["n"] == n
    with pytest.raises(MuscleError, match="no samples with filter 'nope'"):
        compare_files([a, b], None, metric="exact_match,nope")


def test_lm_eval_doc_hash_mismatch_is_refused(tmp_path):
    old = {"strict-match": random_outcomes(20, 12)}
    a = write_jsonl(tmp_path / "samples_gsm8k_a.jsonl", lm_eval_generation_samples(old))
    b_lines = lm_eval_generation_samples(old)
    for i in (1, 4, 9):
        b_lines[i]["doc_hash"] = sha256_text(f"changed {i}")
    b = write_jsonl(tmp_path / "samples_gsm8k_b.jsonl", b_lines)
    with pytest.raises(MuscleError, match=r"3 of 20 instances have a different doc_hash"):
        compare_files([a, b], None)


def test_own_records_and_lm_eval_samples_join_on_prompts_not_doc_hashes(tmp_path):
    """The two formats hash docs differently (lm-eval its dataset row, we our normalised doc),
    so only their prompt hashes must agree."""
    outcomes = random_outcomes(12, 13)
    a = write_jsonl(
        tmp_path / "samples_gsm8k_a.jsonl", lm_eval_generation_samples({"none": outcomes})
    )
    prompt = "Question: How much is {} + 1?\nAnswer:"
    b = write_jsonl(tmp_path / "ours.jsonl", own_records(outcomes[::-1], prompt=prompt))
    pair = compare_files([a, b], None)["pairs"][0]
    assert (pair["nf"], pair["pf"]) == naive_counts(outcomes, outcomes[::-1])
    c = write_jsonl(tmp_path / "other.jsonl", own_records(outcomes, prompt="Q: {}"))
    with pytest.raises(MuscleError, match="12 of 12 instances have a different prompt_hash"):
        compare_files([a, c], None)


def lm_eval_mc_samples(lls: list[list[float]], gold: list[int]) -> list:
    """A multiple-choice samples file: filtered_resps = [[loglik, is_greedy], ...] as strings."""
    lines = []
    for i, (ll, g) in enumerate(zip(lls, gold, strict=True)):
        doc = {"goal": f"goal {i}", "sol1": "a", "sol2": "b", "label": g}
        pred = int(np.argmax(ll))
        lines.append(
            {
                "doc_id": i,
                "doc": doc,
                "target": str(g),
                "arguments": {
                    f"gen_args_{k}": {"arg_0": f"Question: goal {i}\nAnswer:", "arg_1": f" {s}"}
                    for k, s in enumerate(("a", "b"))
                },
                "resps": [[[str(x), "False"]] for x in ll],
                "filtered_resps": [[str(x), "False"] for x in ll],
                "filter": "none",
                "metrics": ["acc", "acc_norm"],
                "doc_hash": sha256_text(json.dumps(doc, indent=2, ensure_ascii=False)),
                "prompt_hash": sha256_text(f"Question: goal {i}\nAnswer:"),
                "target_hash": sha256_text(str(g)),
                "acc": float(pred == g),
                "acc_norm": float(i % 3 == 0),
            }
        )
    return lines


def test_lm_eval_multiple_choice_uses_argmax_prediction(tmp_path):
    gold = [0, 1, 0, 1, 1, 0]
    old_ll = [[-1, -2], [-1, -2], [-3, -2], [-2, -1], [-5, -1], [-1, -4]]  # pred 0 0 1 1 1 0
    new_ll = [[-2, -1], [-2, -1], [-3, -2], [-2, -1], [-1, -5], [-1, -4]]  # pred 1 1 1 1 0 0
    a = write_jsonl(tmp_path / "samples_piqa_a.jsonl", lm_eval_mc_samples(old_ll, gold))
    b = write_jsonl(tmp_path / "samples_piqa_b.jsonl", lm_eval_mc_samples(new_ll, gold))
    out = tmp_path / "out"
    compat = compare_files([a, b], out)  # default metric: the first listed (acc)
    pair = compat["pairs"][0]
    # old correct: 0 3 4 5 ; new correct: 1 3 5 -> NF {0, 4}, PF {1}
    assert (pair["nf"], pair["pf"]) == (2, 1)
    # new wrong: 0 2 4; prediction changed: 0 (0->1), 4 (1->0); 2 same (1->1)
    assert pair["nfr_mc"] == pytest.approx(2 / 6)
    flips = [json.loads(x) for x in (out / "flips.jsonl").read_text().splitlines()]
    assert flips[2]["quadrant"] == "same-mistake"
    assert flips[0]["old"]["prediction"] == 0 and flips[0]["new"]["prediction"] == 1
    norm = compare_files([a, b], None, metric="acc_norm")
    assert norm["pairs"][0]["nf"] == 0 and norm["models"][0]["source"] == "acc_norm,none"
    with pytest.raises(MuscleError, match="no metric 'bleu'"):
        compare_files([a, b], None, metric="bleu")


def test_acc_norm_inconsistency_flips_use_the_length_normalised_choice(tmp_path):
    """NFR_mc under acc_norm compares the choices acc_norm scored (log-likelihood per character
    of the choice, lm-eval's rule), not the raw argmax: hand-counted on four items."""
    choices = ["a short one", "a much, much longer ending"]  # 11 and 26 characters
    gold = [1, 1, 1, 0]
    # raw argmax / per-character argmax:   old 0/1, 0/1, 0/0, 0/0 ; new 0/0, 1/1, 0/1, 0/0
    old_ll = [[-10, -20], [-10, -20], [-10, -30], [-10, -30]]
    new_ll = [[-10, -30], [-30, -20], [-10, -20], [-10, -30]]

    def samples(lls: list[list[float]]) -> list:
        lines = lm_eval_mc_samples(lls, gold)
        for line, ll, g in zip(lines, lls, gold, strict=True):
            line["arguments"] = {
                f"gen_args_{k}": {"arg_0": "Q:", "arg_1": f" {c}"} for k, c in enumerate(choices)
            }
            norm = [x / len(c) for x, c in zip(ll, choices, strict=True)]
            line["acc_norm"] = float(int(np.argmax(norm)) == g)
        return lines

    a = write_jsonl(tmp_path / "samples_hs_a.jsonl", samples(old_ll))
    b = write_jsonl(tmp_path / "samples_hs_b.jsonl", samples(new_ll))
    pair = compare_files([a, b], None, metric="acc_norm")["pairs"][0]
    # acc_norm correct: old 1 1 0 1, new 0 1 1 1 -> one negative flip (item 0), one positive
    assert (pair["nf"], pair["pf"]) == (1, 1)
    # new wrong only on item 0, where it chose 0 and old (normalised) chose 1: an
    # inconsistency flip (with the raw argmax both chose 0: none)
    assert pair["nfr_mc"] == pytest.approx(1 / 4)


def test_acc_norm_on_own_records_uses_prediction_norm(tmp_path):
    rows = {v: own_records([True, False, True]) for v in ("a", "b")}
    for v, norm_ok, pred_norm in (
        ("a", [1, 1, 1], ["0", "1", "2"]),
        ("b", [1, 0, 1], ["0", "x", "2"]),
    ):
        for r, ok, p in zip(rows[v], norm_ok, pred_norm, strict=True):
            r.update({"acc_norm": bool(ok), "prediction_norm": p, "prediction": "same"})
    a = write_jsonl(tmp_path / "a.jsonl", rows["a"])
    b = write_jsonl(tmp_path / "b.jsonl", rows["b"])
    pair = compare_files([a, b], None, metric="acc_norm")["pairs"][0]
    assert pair["nf"] == 1 and pair["nfr_mc"] == pytest.approx(1 / 3)  # "1" -> "x" differs


def test_lm_eval_slice_by_nested_doc_field(tmp_path):
    gold = [0, 1, 0, 1]
    ll = [[-1, -2], [-1, -2], [-1, -2], [-1, -2]]
    a = write_jsonl(tmp_path / "samples_a.jsonl", lm_eval_mc_samples(ll, gold))
    b = write_jsonl(tmp_path / "samples_b.jsonl", lm_eval_mc_samples([[-2, -1]] * 4, gold))
    compat = compare_files([a, b], None, slice_by=["doc.label"])
    rows = {r["value"]: r for r in compat["slices"]["doc.label"]}
    assert rows["0"]["pairs"][0]["nf"] == 2 and rows["1"]["pairs"][0]["pf"] == 2


# --- joins and errors -------------------------------------------------------------------------
def test_duplicate_ids_are_an_error(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i % 4, "correct": True} for i in range(6)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": i, "correct": True} for i in range(4)])
    with pytest.raises(MuscleError, match=r"a.jsonl: 2 duplicate ids \(first: '0', '1'\)"):
        compare_files([a, b], None)


def test_a_string_where_a_list_belongs_is_a_type_error(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": True} for i in range(4)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": i, "correct": i > 1} for i in range(4)])
    with pytest.raises(TypeError, match="paths must be a list"):
        compare_files(str(a), None)
    with pytest.raises(TypeError, match="slice_by must be a list, got 'category'"):
        compare_files([a, b], None, slice_by="category")
    with pytest.raises(TypeError, match="names must be a list"):
        compare_files([a, b], None, names="old")


def test_missing_ids_error_and_allow_partial(tmp_path):
    old, new = random_outcomes(20, 13), random_outcomes(20, 14)
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": v} for i, v in enumerate(old)])
    keep = [i for i in range(20) if i not in (2, 5, 7)]
    rows = [{"id": i, "correct": new[i]} for i in keep] + [{"id": 99, "correct": True}]
    b = write_jsonl(tmp_path / "b.jsonl", rows)
    with pytest.raises(MuscleError, match=r"lacks 3 ids .*'2', '5', '7'.* has 1 ids not in it"):
        compare_files([a, b], None)
    compat = compare_files([a, b], None, allow_partial=True)
    assert compat["n"] == 17 and compat["join"]["n_common"] == 17
    assert compat["join"]["dropped"] == {"a": 3, "b": 1}
    nf, pf = naive_counts([old[i] for i in keep], [new[i] for i in keep])
    assert (compat["pairs"][0]["nf"], compat["pairs"][0]["pf"]) == (nf, pf)


def test_file_order_does_not_matter(tmp_path):
    old, new = random_outcomes(100, 15), random_outcomes(100, 16)
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": v} for i, v in enumerate(old)])
    rows = [{"id": i, "correct": v} for i, v in enumerate(new)]
    b1 = write_jsonl(tmp_path / "b1.jsonl", rows)
    random.Random(0).shuffle(rows)
    b2 = write_jsonl(tmp_path / "b2.jsonl", rows)
    p1 = compare_files([a, b1], None, names=["a", "b"])["pairs"]
    p2 = compare_files([a, b2], None, names=["a", "b"])["pairs"]
    assert p1 == p2


def test_malformed_line_names_file_and_line(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": True} for i in range(3)])
    b = tmp_path / "b.jsonl"
    b.write_text('{"id": 0, "correct": true}\n{"id": 1, "correct": \n{"id": 2, "correct": 1}\n')
    code, _, err = run_cli(["compare", a, b, "--out", tmp_path / "o"], capsys)
    assert code == 2
    assert f"{b}:2: malformed JSON" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "compat.json").exists()


def test_bad_correct_value_names_file_and_line(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": 0, "correct": True}, {"id": 1, "correct": "x"}])
    with pytest.raises(
        MuscleError, match=r"a.jsonl:2: field 'correct' must be true/false, 0/1 or yes/no"
    ):
        compare_files([a, a], None)


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": True} for i in range(3)])
    code, _, err = run_cli(["compare", a, tmp_path / "missing.jsonl"], capsys)
    assert code == 2 and "missing.jsonl: file not found" in err and err.count("\n") == 1
    code, _, err = run_cli(["compare", a, a, "--id-field", "qid"], capsys)
    assert code == 2 and "no id field 'qid'" in err and "Traceback" not in err
    code, _, err = run_cli(["compare", a, a, "--prediction-field", "answer"], capsys)
    assert code == 2 and "no field 'answer'" in err
    code, _, err = run_cli(["compare", a], capsys)
    assert code == 2 and "at least two files" in err
    code, _, err = run_cli(["compare", a, a, "--format", "xml"], capsys)
    assert code == 2 and "unknown format" in err
    code, _, err = run_cli(["compare", a, a, "--max-rows", "-5", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--max-rows -5: must be >= 0" in err and not (tmp_path / "r").exists()


# --- is a candidate's NFR different from new's? -----------------------------------------------
def _flip_table(old: list, new: list, cand: list, flip) -> tuple[int, int, int, int]:
    """Naive loop: (both flip, only new flips, only the candidate flips, neither)."""
    cells = [0, 0, 0, 0]
    for o, n, c in zip(old, new, cand, strict=True):
        f0, fc = flip(o, n), flip(o, c)
        cells[0 if f0 and fc else 1 if f0 else 2 if fc else 3] += 1
    return tuple(cells)  # type: ignore[return-value]


def test_candidate_delta_nfr_interval_and_p_value_from_the_paired_flip_table(tmp_path):
    from muscle.metrics import mcnemar_exact_p, newcombe_paired_interval
    from muscle.report.render import summary_rows

    def files(tag: str, field: str, *models: list) -> list[str]:
        return [
            write_jsonl(
                tmp_path / f"{tag}-{k}.jsonl", [{"id": i, field: v} for i, v in enumerate(m)]
            )
            for k, m in enumerate(models)
        ]

    # discrete: 10 hand-made items; new flips 0-3, the candidate 0, 1 and 4 (removes 2, adds 1)
    old = [True] * 8 + [False] * 2
    new = [False] * 4 + [True] * 4 + [False, True]
    cand = [False, False, True, True, False, True, True, True, False, False]
    compat = compare_files(files("d", "correct", old, new, cand), None)
    pair = compat["pairs"][1]
    table = _flip_table(old, new, cand, lambda o, x: o and not x)
    assert table == (2, 2, 1, 5)
    assert (pair["flips_removed"], pair["flips_added"]) == (2, 1)
    assert pair["delta_nfr"] == pytest.approx((1 - 2) / 10)
    assert pair["delta_nfr_ci95"] == pytest.approx(list(newcombe_paired_interval(*table)))
    lo, hi = pair["delta_nfr_ci95"]
    assert lo < pair["delta_nfr"] < hi and lo < 0 < hi  # one flip of ten: not significant
    assert pair["delta_nfr_mcnemar_p"] == pytest.approx(mcnemar_exact_p(2, 1)) == 1.0
    head, rows = summary_rows(compat)  # what `muscle compare` prints and the reports show
    col = head.index("flips removed / added (p)")
    assert (rows[0][col], rows[1][col]) == ("–", "2 / 1 (1.0000)")
    assert rows[1][head.index("ΔNFR vs new [95% CI]")].startswith("-0.1000 [")

    # many flips removed, none added: the interval excludes 0 and p is tiny
    n = 400
    old = [True] * n
    new = [i % 5 != 0 for i in range(n)]  # 80 flips
    cand = [i % 10 != 0 for i in range(n)]  # 40 of them, nothing new
    pair = compare_files(files("s", "correct", old, new, cand), None)["pairs"][1]
    assert (pair["flips_removed"], pair["flips_added"]) == (40, 0)
    assert pair["delta_nfr_ci95"][1] < 0 and pair["delta_nfr_mcnemar_p"] < 1e-9

    # continuous (scores): a flip is a decrease beyond epsilon
    rnd = random.Random(5)
    old = [rnd.random() for _ in range(300)]
    new = [min(1.0, max(0.0, o + rnd.uniform(-0.3, 0.2))) for o in old]
    cand = [min(1.0, max(0.0, o + rnd.uniform(-0.2, 0.2))) for o in old]
    pair = compare_files(files("c", "score", old, new, cand), None, epsilon=0.05)["pairs"][1]
    table = _flip_table(old, new, cand, lambda o, x: x - o < -0.05)
    assert (pair["flips_removed"], pair["flips_added"]) == (table[1], table[2])
    assert pair["delta_nfr"] == pytest.approx((table[2] - table[1]) / 300)
    assert pair["delta_nfr_ci95"] == pytest.approx(list(newcombe_paired_interval(*table)))
    assert pair["delta_nfr_mcnemar_p"] == pytest.approx(mcnemar_exact_p(table[1], table[2]))


# --- outputs, candidates, gate ----------------------------------------------------------------
def test_outputs_candidates_and_deltas(tmp_path, capsys):
    n = 200
    old, new, cand = random_outcomes(n, 17), random_outcomes(n, 18, 0.7), random_outcomes(n, 19)
    files = []
    for name, vals in (("old", old), ("new", new), ("compat", cand)):
        files.append(
            write_jsonl(
                tmp_path / f"{name}.jsonl",
                [
                    {"id": i, "correct": v, "prediction": "A" if v else f"W{i % 3}"}
                    for i, v in enumerate(vals)
                ],
            )
        )
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["compare", *files, "--out", out, "--max-rows", 5], capsys)
    assert code == 0 and "old → new" in stdout
    compat = json.loads((out / "compat.json").read_text())
    assert [(p["old"], p["new"]) for p in compat["pairs"]] == [("old", "new"), ("old", "compat")]
    nfr = naive_counts(old, new)[0] / n
    nfr_c = naive_counts(old, cand)[0] / n
    cpair = compat["pairs"][1]
    assert cpair["nfr"] == pytest.approx(nfr_c)
    assert cpair["delta_nfr"] == pytest.approx(nfr_c - nfr)
    assert cpair["delta_nfr_pct"] == pytest.approx((nfr_c - nfr) / nfr)
    assert cpair["delta_accuracy"] == pytest.approx((sum(cand) - sum(new)) / n)
    assert "delta_nfr" not in compat["pairs"][0]
    for key in ("schema_version", "n", "kind", "models", "pairs"):
        assert key in compat
    assert compat["muscle_version"] == muscle.__version__
    for key in (
        "nf",
        "pf",
        "nfr",
        "pfr",
        "nfr_ci95",
        "pfr_ci95",
        "btc",
        "bec",
        "relative_nfr",
        "nfr_mc",
        "mcnemar_p",
        "accuracy_delta",
        "accuracy_delta_ci95",
    ):
        assert key in compat["pairs"][0]
    flips = [json.loads(x) for x in (out / "flips.jsonl").read_text().splitlines()]
    assert len(flips) == n
    quad = [f["quadrant"] for f in flips]
    assert quad.count("regression") == compat["pairs"][0]["nf"]
    assert quad.count("gain") == compat["pairs"][0]["pf"]
    assert quad.count("both-correct") == compat["pairs"][0]["both_correct"]
    assert (
        quad.count("same-mistake") + quad.count("different-mistake")
        == (compat["pairs"][0]["both_wrong"])
    )
    assert sum(f["candidate1"]["quadrant"] == "regression" for f in flips) == cpair["nf"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "<script" not in html
    assert html.count("<tr>") >= 5
    md = (out / "report.md").read_text()
    nf = compat["pairs"][0]["nf"]
    assert f"{nf} regressions; the first 5 shown" in md
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_inconsistency_flips_compare_answers_as_correctness_does(tmp_path):
    """ "18" and "18.0" are one answer (as when scoring), and a missing prediction is unknown,
    not "the same": hand-counted on the reviewer's four items, then with a gap."""
    old = [("a", "18", "20"), ("b", "5", "5"), ("c", " 7", "9"), ("d", "$1,000", "3")]
    new = [("a", "18.0", "20"), ("b", "6", "5"), ("c", "7", "9"), ("d", "1000", "3")]
    rows = {
        v: [{"id": i, "prediction": p, "target": t} for i, p, t in recs]
        for v, recs in (("old", old), ("new", new))
    }
    a = write_jsonl(tmp_path / "old.jsonl", rows["old"])
    b = write_jsonl(tmp_path / "new.jsonl", rows["new"])
    compat = compare_files([a, b], tmp_path / "out")
    assert compat["pairs"][0]["nfr_mc"] == pytest.approx(1 / 4)  # only b: 5 -> 6
    flips = [json.loads(x) for x in (tmp_path / "out" / "flips.jsonl").read_text().splitlines()]
    same = "same-mistake"
    assert [f["quadrant"] for f in flips] == [same, "regression", same, same]
    rows["new"][0]["prediction"] = None  # a's new answer unknown
    b = write_jsonl(tmp_path / "new2.jsonl", rows["new"])
    compat = compare_files([a, b], tmp_path / "out2")
    assert compat["pairs"][0]["nfr_mc"] is None
    flips = [json.loads(x) for x in (tmp_path / "out2" / "flips.jsonl").read_text().splitlines()]
    assert flips[0]["quadrant"] == "both-wrong"


def test_slice_values_are_taken_per_instance(tmp_path):
    a = write_jsonl(
        tmp_path / "a.jsonl",
        [{"id": "a", "correct": True, "category": "X"}, {"id": "b", "correct": True}],
    )
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"id": "a", "correct": False, "category": "X"},
            {"id": "b", "correct": True, "category": "Y"},
        ],
    )
    rows = compare_files([a, b], None, slice_by=["category"])["slices"]["category"]
    assert sorted((r["value"], r["n"]) for r in rows) == [("X", 1), ("Y", 1)]


def test_gate_exits_1_after_writing_the_report(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": True} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": i, "correct": i != 3} for i in range(10)])
    out = tmp_path / "out"
    code, _, err = run_cli(["compare", a, b, "--out", out, "--max-nfr", "0.05"], capsys)
    assert code == 1 and "NFR 1/10 = 0.1 of" in err and "exceeds --max-nfr 0.05" in err
    assert "(at most 0 negative flips pass)" in err
    assert json.loads((out / "compat.json").read_text())["pairs"][0]["nf"] == 1
    code, _, _ = run_cli(["compare", a, b, "--max-nfr", "0.1"], capsys)
    assert code == 0
    with pytest.raises(GateFailed):
        from muscle.compare import check_gate

        check_gate(compare_files([a, b], None), 0.0)
    # a percentage where a fraction belongs is refused before any output is written
    code, _, err = run_cli(["compare", a, b, "--out", tmp_path / "pct", "--max-nfr", "2"], capsys)
    assert code == 2 and "--max-nfr 2: a fraction in [0, 1] (0.02 for 2 %)" in err
    assert not (tmp_path / "pct").exists()


def test_real_gsm8k_gpt3_6b_to_175b_through_the_cli(shared_data, tmp_path, capsys):
    path = shared_data / "predictions" / "gsm8k-openai-gpt3" / "example_model_solutions.jsonl"
    # independent count straight from the file
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    old = [r["6b_finetuning"]["is_correct"] for r in recs]
    new = [r["175b_finetuning"]["is_correct"] for r in recs]
    nf, pf = naive_counts(old, new)
    out = tmp_path / "gpt3"
    code, stdout, err = run_cli(
        [
            "compare",
            path,
            path,
            "--name",
            "6b",
            "--name",
            "175b",
            "--id-field",
            "@line",
            "--correct-field",
            "6b_finetuning.is_correct",
            "--correct-field",
            "175b_finetuning.is_correct",
            "--prediction-field",
            "6b_finetuning.solution",
            "--prediction-field",
            "175b_finetuning.solution",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    compat = json.loads((out / "compat.json").read_text())
    pair = compat["pairs"][0]
    assert compat["n"] == len(recs) == 1319
    assert (pair["nf"], pair["pf"]) == (nf, pf) == (88, 260)
    assert pair["accuracy_old"] == pytest.approx(sum(old) / 1319)
    assert pair["mcnemar_p"] < 1e-10
    assert "6b → 175b" in stdout


def _last_number(text: str) -> str | None:
    import re

    nums = re.findall(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text.replace("$", ""))
    return nums[-1].rstrip(".") if nums else None


def _as_float(text: str | None) -> float | None:
    try:
        return float(str(text).replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


def test_real_gsm8k_faithful_cot_prediction_and_target(shared_data, tmp_path, capsys):
    """Four real GPT-3.x/4 versions on GSM8K: predictions joined with the gold answers into
    generic files (prediction + target), then compared; checked against a naive count."""
    folder = shared_data / "predictions" / "gsm8k-faithful-cot"
    gold = {}
    for line in (folder / "gold_test.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        gold[rec["id"]] = rec["answer"].split("####")[-1].strip()
    models = ["text002", "text003", "gpt-3.5-turbo", "gpt4"]
    files, correct = [], {}
    for m in models:
        rows = []
        for line in (folder / f"{m}_COT.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            ans = rec["answer"].strip()
            pred = ans if _as_float(ans) is not None else _last_number(rec["completion"])
            rows.append({"id": rec["id"], "prediction": pred, "target": gold[rec["id"]]})
        correct[m] = [
            _as_float(r["prediction"]) is not None
            and _as_float(r["prediction"]) == _as_float(r["target"])
            for r in rows
        ]
        files.append(write_jsonl(tmp_path / f"{m}.jsonl", rows))
    out = tmp_path / "cot"
    args = ["compare", *files, "--out", out]
    for m in models:
        args += ["--name", m]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    compat = json.loads((out / "compat.json").read_text())
    assert compat["n"] == 1319
    for pair, m in zip(compat["pairs"], models[1:], strict=True):
        nf, pf = naive_counts(correct["text002"], correct[m])
        assert (pair["old"], pair["new"]) == ("text002", m)
        assert (pair["nf"], pair["pf"]) == (nf, pf)
    acc = {m["name"]: m["accuracy"] for m in compat["models"]}
    assert acc["gpt4"] > acc["text002"]  # sanity: GPT-4 is the strongest of the four


def test_metric_on_own_records_picks_discrete_or_continuous(tmp_path):
    def recs(acc_norm: list[bool], rouge: list[float]) -> list[dict]:
        rows = own_records([True] * len(acc_norm))
        for r, a, s in zip(rows, acc_norm, rouge, strict=True):
            r.update({"acc_norm": a, "rouge1": s})
        return rows

    a = write_jsonl(tmp_path / "a.jsonl", recs([True, True, False, False], [0.5, 0.2, 0.9, 0.0]))
    b = write_jsonl(tmp_path / "b.jsonl", recs([True, False, True, False], [0.4, 0.3, 0.9, 0.1]))
    disc = compare_files([a, b], None, metric="acc_norm")
    assert disc["kind"] == "discrete"
    assert (disc["pairs"][0]["nf"], disc["pairs"][0]["pf"]) == (1, 1)
    cont = compare_files([a, b], None, metric="rouge1")
    assert cont["kind"] == "continuous"
    assert (cont["pairs"][0]["nf"], cont["pairs"][0]["pf"]) == (1, 2)
    assert cont["pairs"][0]["m_r"] == pytest.approx(0.1)
    with pytest.raises(MuscleError, match="not both"):
        compare_files([a, b], None, metric="acc_norm", correct_field="correct")


def test_default_names_use_folders_when_file_names_collide(tmp_path):
    for model in ("llama-1", "llama-2"):
        (tmp_path / model).mkdir()
        write_jsonl(
            tmp_path / model / "samples_piqa.jsonl", lm_eval_mc_samples([[-1, -2]] * 3, [0, 1, 0])
        )
    compat = compare_files(
        [tmp_path / "llama-1" / "samples_piqa.jsonl", tmp_path / "llama-2" / "samples_piqa.jsonl"],
        None,
    )
    assert [m["name"] for m in compat["models"]] == ["llama-1", "llama-2"]


def test_failed_run_leaves_no_stale_outputs(tmp_path, capsys, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "correct": True} for i in range(3)])
    out = tmp_path / "out"
    assert run_cli(["compare", a, a, "--out", out], capsys)[0] == 0
    assert (out / "compat.json").exists()
    # a report that fails after reading (here: an impossible slice) must not leave the old one
    code, _, err = run_cli(["compare", a, a, "--out", out, "--slice-by", "nope"], capsys)
    assert code == 2 and "--slice-by nope" in err
    assert (out / "compat.json").exists()  # validation errors happen before anything is written
    from muscle import compare as cmp

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cmp, "write_flips", boom)
    with pytest.raises(OSError):
        compare_files([a, a], out)
    # none of the earlier run's outputs is left to pass for this run's
    assert not any((out / name).exists() for name in cmp.OUTPUTS)


def test_reads_records_built_by_the_eval_harness(shared_data, tmp_path):
    """Contract 1 end to end: records made by ``muscle.evaluation.records`` for real PIQA docs
    are detected as the own format, joined, hash-checked and counted correctly."""
    records = pytest.importorskip("muscle.evaluation.records")
    from muscle.tasks import get_task

    task = get_task("piqa")
    docs = task.load_docs(str(shared_data / "piqa" / "valid.jsonl"))[:80]
    rng = np.random.default_rng(0)
    outcomes = {}
    files = []
    for name in ("v1", "v2"):
        rows = []
        for doc in docs:
            lls = rng.normal(size=2).tolist()
            rec = records.base_record(task, doc, task.doc_to_text(doc))
            rec |= records.mc_fields(lls, task.doc_to_choices(doc), task.gold_index(doc))
            rows.append(rec)
        outcomes[name] = [r["correct"] for r in rows]
        files.append(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    compat = compare_files(files, None)
    assert compat["models"][0]["format"] == "muscle" and compat["n"] == 80
    assert (compat["pairs"][0]["nf"], compat["pairs"][0]["pf"]) == naive_counts(
        outcomes["v1"], outcomes["v2"]
    )
    norm = compare_files(files, None, metric="acc_norm")
    assert norm["kind"] == "discrete"


def test_field_options_are_refused_for_lm_eval(tmp_path):
    a = write_jsonl(tmp_path / "samples_a.jsonl", lm_eval_mc_samples([[-1, -2]], [0]))
    with pytest.raises(MuscleError, match="--correct-field do not apply to lm-eval"):
        compare_files([a, a], None, names=["x", "y"], correct_field="acc")


def test_html_report_escapes_model_outputs(tmp_path):
    evil = "<script>alert('x')</script> | a\nb"
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": 0, "correct": True, "prediction": "ok"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": 0, "correct": False, "prediction": evil}])
    out = tmp_path / "out"
    compare_files([a, b], out)
    html = (out / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html
    md = (out / "report.md").read_text()
    assert "\\| a b" in md  # pipes escaped, newlines folded inside the table cell
    assert "<script" not in md and "&lt;script>" in md  # no raw HTML in the Markdown either
    flips = json.loads((out / "flips.jsonl").read_text())
    assert flips["new"]["prediction"] == evil  # flips.jsonl keeps the raw output
    # slice values are cells too
    for name, ok in (("a", True), ("b", False)):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"id": 0, "correct": ok, "kind": "c|<i>"}])
    compare_files([a, b], out, slice_by=["kind"])
    md = (out / "report.md").read_text()
    assert "| c\\|&lt;i> | 1 |" in md


def test_slice_by_length_with_few_distinct_lengths(tmp_path):
    """Two lengths (50 of 2 chars, 70 of 3): two slices, not one merged quartile bucket."""
    old, new = random_outcomes(120, 31), random_outcomes(120, 32)
    rows = lambda vals: [  # noqa: E731
        {"id": i, "correct": v, "target": "ab" if i < 50 else "abc"} for i, v in enumerate(vals)
    ]
    a = write_jsonl(tmp_path / "a.jsonl", rows(old))
    b = write_jsonl(tmp_path / "b.jsonl", rows(new))
    buckets = compare_files([a, b], None, slice_by=["len(target)"])["slices"]["len(target)"]
    assert [(r["value"], r["n"]) for r in buckets] == [("1: 2 chars", 50), ("2: 3 chars", 70)]
    assert (buckets[1]["pairs"][0]["nf"], buckets[1]["pairs"][0]["pf"]) == naive_counts(
        old[50:], new[50:]
    )


def test_slice_by_length_quartiles(tmp_path):
    n = 40
    old, new = random_outcomes(n, 21), random_outcomes(n, 22)
    rows = lambda vals: [  # noqa: E731
        {"id": i, "correct": v, "question": "w" * (i + 1)} for i, v in enumerate(vals)
    ]
    a = write_jsonl(tmp_path / "a.jsonl", rows(old))
    b = write_jsonl(tmp_path / "b.jsonl", rows(new))
    compat = compare_files([a, b], None, slice_by=["len(question)"])
    buckets = compat["slices"]["len(question)"]
    assert [r["value"].split(":")[0] for r in buckets] == ["1", "2", "3", "4"]
    assert sum(r["n"] for r in buckets) == n
    import re

    for r in buckets:
        k, lo, hi, close = re.fullmatch(r"(\d+): \[(\d+), (\d+)([)\]]) chars", r["value"]).groups()
        lo, hi = int(lo), int(hi)
        idx = [
            i for i in range(n) if lo <= i + 1 and (i + 1 < hi or (close == "]" and i + 1 == hi))
        ]
        assert r["n"] == len(idx)
        assert (r["pairs"][0]["nf"], r["pairs"][0]["pf"]) == naive_counts(
            [old[i] for i in idx], [new[i] for i in idx]
        )


def _md_tables(md: str) -> list[list[str]]:
    """The Markdown tables of a report, each a list of its row lines."""
    tables: list[list[str]] = []
    prev = False
    for line in md.splitlines():
        row = line.startswith("|")
        if row and not prev:
            tables.append([])
        if row:
            tables[-1].append(line)
        prev = row
    return tables


def test_markdown_tables_stay_well_formed_with_hostile_names(tmp_path):
    """Model names, slice fields and values with pipes, HTML and newlines: every table row has
    its header's column count and no raw HTML reaches the Markdown."""
    old, new, cand = (random_outcomes(60, s) for s in (41, 42, 43))
    for name, vals in (("a", old), ("b", new), ("c", cand)):
        write_jsonl(
            tmp_path / f"{name}.jsonl",
            [{"id": i, "correct": v, "k|<b>": f"v{i % 3}|<i>"} for i, v in enumerate(vals)],
        )
    names = ["old<script>x</script>", "new & | model", "cand\nline2"]
    out = tmp_path / "out"
    files = [str(tmp_path / f"{n}.jsonl") for n in "abc"]
    compat = compare_files(files, out, names=names, slice_by=["k|<b>"])
    md = (out / "report.md").read_text()
    assert "<script" not in md and "<b>" not in md and "<i>" not in md
    tables = _md_tables(md)
    assert len(tables) == 5  # summary, inputs, quadrants, slice, regressions
    for rows in tables:
        width = {len(r.replace("\\|", "").split("|")) for r in rows}
        assert len(width) == 1, rows
    assert f"muscle-llm {muscle.__version__}" in md
    assert f"muscle-llm {muscle.__version__}" in (out / "report.html").read_text()
    assert compat["pairs"][0]["nf"] == naive_counts(old, new)[0]


def test_quadrant_columns_follow_each_pairs_predictions(tmp_path):
    """Old and new have predictions, the candidate only correctness: its both-wrong items are
    a column of their own, not lost under same-/different-mistake."""
    rnd = random.Random(5)
    rows = {k: [] for k in "abc"}
    for i in range(80):
        o, n, c = (rnd.random() < 0.5 for _ in range(3))
        rows["a"].append({"id": i, "correct": o, "prediction": "x" if o else rnd.choice("pq")})
        rows["b"].append({"id": i, "correct": n, "prediction": "x" if n else rnd.choice("pq")})
        rows["c"].append({"id": i, "correct": c})
    files = [write_jsonl(tmp_path / f"{k}.jsonl", v) for k, v in rows.items()]
    out = tmp_path / "out"
    compare_files(files, out, names=["old", "new", "cand"])
    md = (out / "report.md").read_text()
    quad = _md_tables(md)[2]
    head = [c.strip() for c in quad[0].strip("|").split("|")]
    assert head[-3:] == ["same-mistake", "different-mistake", "both-wrong"]
    both_wrong = sum(
        1
        for a, c in zip(rows["a"], rows["c"], strict=True)
        if not a["correct"] and not c["correct"]
    )
    cand_row = [c.strip() for c in quad[3].strip("|").split("|")]
    assert cand_row[-1] == str(both_wrong) and cand_row[-3:-1] == ["0", "0"]
    new_row = [c.strip() for c in quad[2].strip("|").split("|")]
    assert new_row[-1] == "0" and int(new_row[-3]) + int(new_row[-2]) == sum(
        1
        for a, b in zip(rows["a"], rows["b"], strict=True)
        if not a["correct"] and not b["correct"]
    )
    assert "| target |" not in md  # no gold answers given: no empty column
