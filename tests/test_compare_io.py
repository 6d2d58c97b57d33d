"""The fast block JSONL reader, CSV parsing, the example generator and the installed CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muscle.compare import _jsonl_blocks, compare_files
from muscle.errors import MuscleError
from muscle.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]

line = st.one_of(
    st.just(""),
    st.just("   "),
    st.dictionaries(st.sampled_from(["id", "correct", "x"]), st.integers(0, 3), max_size=3).map(
        json.dumps
    ),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(line, max_size=25), st.integers(1, 7))
def test_block_reader_matches_read_jsonl(tmp_path_factory, lines, size):
    path = tmp_path_factory.mktemp("r") / "f.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [(n, o) for ns, objs in _jsonl_blocks(path, size) for n, o in zip(ns, objs, strict=True)]
    assert got == list(read_jsonl(path))


@pytest.mark.parametrize(
    "bad, message", [("{oops", "malformed JSON"), ("[1, 2]", "expected a JSON object, got list")]
)
def test_block_reader_names_the_bad_line_in_a_later_block(tmp_path, bad, message):
    rows = [json.dumps({"id": i, "correct": True}) for i in range(9)]
    rows.insert(7, "")  # a blank line shifts the numbering
    rows[8] = bad  # line 9 of the file
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(MuscleError, match=rf"f.jsonl:9: {message}"):
        for _ in _jsonl_blocks(path, size=4):
            pass
    with pytest.raises(MuscleError, match=rf"f.jsonl:9: {message}"):
        compare_files([path, path], None)


def test_csv_row_with_extra_cells_is_an_error(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,correct\n1,1\n2,0,extra\n")
    with pytest.raises(MuscleError, match=r"a.csv:3: more cells than header columns"):
        compare_files([path, path], None)


def test_tsv_is_read(tmp_path):
    a = tmp_path / "a.tsv"
    a.write_text("id\tcorrect\n1\t1\n2\t1\n3\t0\n")
    b = tmp_path / "b.tsv"
    b.write_text("id\tcorrect\n3\t1\n2\t0\n1\t1\n")
    pair = compare_files([a, b], None)["pairs"][0]
    assert (pair["nf"], pair["pf"], pair["both_correct"]) == (1, 1, 1)


def test_example_generator_runs_through_compare(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from make_example_predictions import make_examples
    finally:
        sys.path.pop(0)
    paths = make_examples(tmp_path / "ex", n=60, seed=1)
    again = make_examples(tmp_path / "ex2", n=60, seed=1)
    assert [p.read_text() for p in paths] == [p.read_text() for p in again]  # seeded
    compat = compare_files(
        paths, tmp_path / "out", names=["old", "new", "compat"], slice_by=["category"]
    )
    assert compat["models"][0]["format"] == "muscle"
    assert compat["pairs"][0]["nf"] > 0  # the update causes negative flips
    assert compat["pairs"][1]["delta_nfr"] < 0  # and the candidate has fewer
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


def test_python_m_muscle_compare_gate_exit_code(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": i, "correct": True}) + "\n" for i in range(4)))
    b.write_text("".join(json.dumps({"id": i, "correct": i > 0}) + "\n" for i in range(4)))
    cmd = [sys.executable, "-m", "muscle", "compare", str(a), str(b), "--out", str(tmp_path / "o")]
    ok = subprocess.run([*cmd, "--max-nfr", "0.25"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([*cmd, "--max-nfr", "0.2"], capture_output=True, text=True)
    assert fail.returncode == 1
    assert fail.stderr.strip().startswith("gate failed: NFR 1/4 = 0.25 of")
    assert json.loads((tmp_path / "o" / "compat.json").read_text())["pairs"][0]["nf"] == 1


def test_empty_file_and_empty_cells_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(MuscleError, match="empty.jsonl: no records"):
        compare_files([empty, empty], None)
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("id,correct\n1,1\n2,\n")
    with pytest.raises(
        MuscleError, match=r"a.csv:3: field 'correct' must be true/false, 0/1 or yes/no"
    ):
        compare_files([csv_path, csv_path], None)


def test_non_finite_or_out_of_range_scores_are_errors(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"id": 1, "score": 0.5}\n{"id": 2, "score": NaN}\n')
    with pytest.raises(MuscleError, match=r"a.jsonl:2: field 'score' must be a finite number"):
        compare_files([a, a], None)
    a.write_text('{"id": 1, "score": 0.5}\n{"id": 2, "score": 1.5}\n')
    with pytest.raises(MuscleError, match=r"score 'score' of id 2 is 1.5, outside \[0, 1\]"):
        compare_files([a, a], None)


def test_correctness_and_scores_do_not_mix(tmp_path):
    """One file of 0/1 correctness and one of scores is a mistake, not a continuous comparison;
    an lm-eval accuracy must be 0 or 1 per sample."""
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"id": i, "correct": i % 2 == 0}) + "\n" for i in range(4)))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({"id": i, "score": i / 4}) + "\n" for i in range(4)))
    with pytest.raises(MuscleError, match=r"old.jsonl holds correctness \(0/1\) but .*new.jsonl"):
        compare_files([old, new], None)
    assert compare_files([new, new], None)["kind"] == "continuous"  # scores with scores
    lm = tmp_path / "samples_piqa_x.jsonl"
    rows = [
        {"doc_id": i, "filtered_resps": [["-1.0", False]], "acc": a, "target": 0}
        for i, a in enumerate([1.0, 0.5, 0.0])
    ]
    lm.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MuscleError, match=r"'acc' is 0 or 1 per sample, but doc_id 1 has 0.5"):
        compare_files([lm, lm], None)


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    from muscle.tasks import get_task

    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"id": 1, "correct": true}\n\xff\xfe x\n')
    with pytest.raises(MuscleError, match=r"b.jsonl: not UTF-8 text"):
        compare_files([bad, bad], None)
    csv_path = tmp_path / "b.csv"
    csv_path.write_bytes(b"id,correct\n1,1\n\xff,0\n")
    with pytest.raises(MuscleError, match=r"b.csv: not UTF-8 text"):
        compare_files([csv_path, csv_path], None)
    with pytest.raises(MuscleError, match=r"b.jsonl: not UTF-8 text"):
        list(read_jsonl(bad))
    (tmp_path / "spec.yaml").write_text(
        "name: t\noutput_type: generate_until\ndata_files: {test: b.jsonl}\n"
        "prompt: '{q}'\ntarget_field: a\nmetric: exact_match\n"
    )
    with pytest.raises(MuscleError, match=r"b.jsonl: not UTF-8 text"):
        get_task(str(tmp_path / "spec.yaml")).load_docs()


outcome_rows = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.sampled_from("abc"), st.sampled_from("abc")),
    min_size=1,
    max_size=30,
)


@settings(max_examples=25, deadline=None)
@given(outcome_rows, st.randoms(use_true_random=False), st.sampled_from(["jsonl", "csv"]))
def test_end_to_end_counts_match_a_naive_loop(tmp_path_factory, rows, rnd, ext):
    """Random outcomes written in random order (JSONL or CSV) give the naive loop's metrics."""
    folder = tmp_path_factory.mktemp("e2e")
    paths = []
    for k in range(2):
        order = list(range(len(rows)))
        rnd.shuffle(order)
        path = folder / f"m{k}.{ext}"
        if ext == "jsonl":
            path.write_text(
                "".join(
                    json.dumps({"id": f"q{i}", "correct": rows[i][k], "prediction": rows[i][2 + k]})
                    + "\n"
                    for i in order
                )
            )
        else:
            path.write_text(
                "id,correct,prediction\n"
                + "".join(f"q{i},{int(rows[i][k])},{rows[i][2 + k]}\n" for i in order)
            )
        paths.append(path)
    pair = compare_files(paths, None, names=["old", "new"])["pairs"][0]
    n = len(rows)
    nf = sum(o and not w for o, w, _, _ in rows)
    pf = sum(w and not o for o, w, _, _ in rows)
    changed_wrong = sum(not w and po != pn for _, w, po, pn in rows)
    old_ok = sum(o for o, _, _, _ in rows)
    new_wrong = sum(not w for _, w, _, _ in rows)
    both_wrong = sum(not o and not w for o, w, _, _ in rows)
    assert (pair["nf"], pair["pf"], pair["n"]) == (nf, pf, n)
    assert pair["nfr_mc"] == pytest.approx(changed_wrong / n)
    assert pair["btc"] == (pytest.approx((old_ok - nf) / old_ok) if old_ok else None)
    assert pair["bec"] == (pytest.approx(both_wrong / new_wrong) if new_wrong else None)


def test_out_folder_may_not_overwrite_an_input(tmp_path):
    """--out cf with the input cf/flips.jsonl (a generic file with the same name) is refused
    before anything is written; inputs beside the outputs are fine."""
    rows = [{"id": i, "correct": i % 3 == 0} for i in range(6)]
    (tmp_path / "cf").mkdir()
    old = tmp_path / "cf" / "flips.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in rows))
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps(r | {"correct": True}) + "\n" for r in rows))
    before = old.read_bytes()
    with pytest.raises(MuscleError, match=r"--out .*cf: would write flips.jsonl over input 1"):
        compare_files([str(old), str(new)], tmp_path / "cf")
    assert old.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "cf").iterdir()) == ["flips.jsonl"]
    (tmp_path / "cf" / "old.jsonl").write_bytes(before)
    compare_files([str(tmp_path / "cf" / "old.jsonl"), str(new)], tmp_path)  # beside: fine
    assert (tmp_path / "compat.json").is_file()
