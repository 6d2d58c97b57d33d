"""The demo pipeline end to end on the tiny scenario, and its figures recounted by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muscle.cli import main
from muscle.scenarios import build_scenario
from muscle.scenarios.demo import AdapterRecipe, DemoConfig, run_demo

TINY_RECIPE = AdapterRecipe(
    lora_r=4,
    lora_alpha=8,
    learning_rate=5e-3,
    num_train_epochs=2,
    batch_size=16,
    compat_epochs=1,
    max_length=64,
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    cache = tmp_path_factory.getbasetemp() / "muscle-scenarios"  # shared with the build tests
    build_scenario(seed=0, size="tiny", cache_dir=cache)
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(
        out=str(out),
        tasks=("world-qa", "world-dialog"),
        seed=0,
        size="tiny",
        recipe=TINY_RECIPE,
        cache_dir=str(cache),
        jobs=1,
    )
    messages: list[str] = []
    summary = run_demo(cfg, progress=messages.append)
    assert any("compatibility adapter" in m for m in messages)
    return out, summary


def _records(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in rows}


def _again(out: Path, summary: dict, tasks: tuple[str, ...], jobs: int = 1) -> DemoConfig:
    """The fixture's demo configuration again, into ``out``, on the scenario it built."""
    cache = summary["scenario"]["root"].rsplit("/", 1)[0]
    return DemoConfig(
        out=str(out),
        tasks=tasks,
        seed=0,
        size="tiny",
        recipe=TINY_RECIPE,
        cache_dir=cache,
        jobs=jobs,
    )


def test_summary_has_every_figure(demo_run: tuple[Path, dict]) -> None:
    out, summary = demo_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["tasks"] == summary["tasks"]
    keys = {"acc_v1", "acc_v2", "acc_v2c", "nfr_v2", "nfr_v2c", "nfr_reduction_pct"}
    keys |= {"acc_none", "nfr_none"}
    for task in ("world-qa", "world-dialog"):
        row = summary["tasks"][task]
        assert keys <= set(row)
    assert {"m_r_v2", "m_r_v2c"} <= set(summary["tasks"]["world-dialog"])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # Fig. 1 and the learning curves
    assert "world-qa" in html


def test_table_shows_every_paper_figure_of_the_summary(demo_run: tuple[Path, dict]) -> None:
    from muscle.scenarios.report import table_rows

    _, summary = demo_run
    head, rows = table_rows(summary)
    dialog = dict(zip(head, rows[list(summary["tasks"]).index("world-dialog")], strict=True))
    row = summary["tasks"]["world-dialog"]
    for col, key in (("m_g v2", "m_g_v2"), ("m_g v2C", "m_g_v2c"), ("m_r v2C", "m_r_v2c")):
        if row[key] is not None:  # a column with no value on any task is dropped
            assert dialog[col] == f"{100 * row[key]:.1f}"  # ROUGE points, as acc
        else:
            assert dialog.get(col, "–") == "–"
    assert dialog["acc v2"] == f"{100 * row['acc_v2']:.1f}"
    # signs: a reduction reads negative, no change reads 0.0 (never -0.0), a rise positive
    fake = {"tasks": {"t": {"nfr_reduction_pct": 40.0, "delta_nfr": -0.02, "delta_acc": 0.0}}}
    fake["tasks"]["u"] = {"nfr_reduction_pct": -0.0, "delta_nfr": 0.0004, "delta_acc": 0.015}
    head, rows = table_rows(fake)
    assert head == ["task", "ΔNFR_c", "Δ%NFR_c", "Δacc_c"]
    assert rows == [["t", "-2.0", "-40.0%", "0.0"], ["u", "0.0", "0.0%", "+1.5"]]


def test_figures_match_an_independent_recount(demo_run: tuple[Path, dict]) -> None:
    """NFR, accuracy and the reduction recounted from the per-instance eval files."""
    out, summary = demo_run
    work = Path(summary["work_dir"])
    for task in ("world-qa", "world-dialog"):
        recs = {n: _records(work / task / f"eval_{n}.jsonl") for n in ("v1", "v2")}
        recs["v2c"] = _records(work / task / "eval_student-wrong.jsonl")
        recs["none"] = _records(work / task / "eval_none.jsonl")
        ids = sorted(recs["v1"])
        assert all(sorted(r) == ids for r in recs.values())
        row = summary["tasks"][task]
        key = "correct" if task == "world-qa" else "score"
        for tag in ("v2", "v2c", "none"):
            if key == "correct":
                nf = sum(recs["v1"][i]["correct"] and not recs[tag][i]["correct"] for i in ids)
                acc = sum(recs[tag][i]["correct"] for i in ids) / len(ids)
            else:
                nf = sum(recs[tag][i]["score"] < recs["v1"][i]["score"] for i in ids)
                acc = sum(recs[tag][i]["score"] for i in ids) / len(ids)
            assert row[f"nfr_{tag}"] == pytest.approx(nf / len(ids))
            assert row[f"acc_{tag}"] == pytest.approx(acc)
        if row["nfr_v2"]:
            want = 100 * (row["nfr_v2"] - row["nfr_v2c"]) / row["nfr_v2"]
            assert row["nfr_reduction_pct"] == pytest.approx(want)

        def flipped(tag: str, recs=recs, key=key, ids=ids) -> set:
            if key == "correct":
                return {i for i in ids if recs["v1"][i]["correct"] and not recs[tag][i]["correct"]}
            return {i for i in ids if recs[tag][i]["score"] < recs["v1"][i]["score"]}

        assert row["nf_v2"] == len(flipped("v2"))
        for tag in ("v2c", "none"):  # the flips each candidate removed and added, by hand
            assert row[f"flips_removed_{tag}"] == len(flipped("v2") - flipped(tag))
            assert row[f"flips_added_{tag}"] == len(flipped(tag) - flipped("v2"))


def test_training_follows_the_fair_comparison_rules(demo_run: tuple[Path, dict]) -> None:
    out, summary = demo_run
    work = Path(summary["work_dir"])
    for task in ("world-qa", "world-dialog"):
        logs = {
            n: json.loads((work / task / d / "training.json").read_text())
            for n, d in (("v1", "m_v1"), ("v2", "m_v2"), ("c", "c_student-wrong"))
        }
        logs["none"] = json.loads((work / task / "c_none" / "training.json").read_text())
        # one recipe for M1 and M2, both seeded by the demo seed
        for k in ("lora_r", "learning_rate", "num_train_epochs", "seed"):
            assert logs["v1"]["config"][k] == logs["v2"]["config"][k]
        # `none` runs exactly as many steps as MUSCLE, from the same M2 adapter
        assert logs["none"]["total_steps"] == logs["c"]["total_steps"] > 0
        assert logs["none"]["config"]["new_adapter"] == logs["c"]["config"]["new_adapter"]
        assert logs["none"]["mask"] == "none" and logs["c"]["mask"] == "student-wrong"
        assert summary["training"][task]["v2"]["epochs"]
        # the summary carries each run's steps, and its early-stop learning rate is the one the
        # training log warns about (a share of the peak lr, from the trainer's log history)
        for n in ("v1", "v2"):
            brief = summary["training"][task][n]
            assert brief["total_steps"] == logs[n]["total_steps"] > 0
            lrs = [h["learning_rate"] for h in logs[n]["log_history"] if "learning_rate" in h]
            if brief["total_steps"] < brief["planned_steps"]:
                assert brief["stopped_lr"] == pytest.approx(lrs[-1] / max(lrs))
            else:
                assert brief["stopped_lr"] is None
            warned = any("early stopping ended" in w for w in logs[n]["warnings"])
            assert warned == (brief["stopped_lr"] is not None and brief["stopped_lr"] > 0.5)


def test_rerun_reuses_finished_steps(demo_run: tuple[Path, dict]) -> None:
    out, summary = demo_run
    again = run_demo(_again(out, summary, ("world-qa",)))
    assert again["tasks"]["world-qa"] == summary["tasks"]["world-qa"]
    assert again["seconds"]["world-qa"] < summary["seconds"]["world-qa"]


def test_an_interrupted_run_continues_on_rerun(demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    """A demo stopped during a compatibility run and an evaluation (its checkpoints and partial
    records kept, nothing finished) continues on rerun and gives the same figures (it once
    stopped with "pass --resume", an option the demo does not have)."""
    import shutil

    out, summary = demo_run
    copy = tmp_path / "demo"
    shutil.copytree(out, copy)
    work = next((copy / "runs").iterdir()) / "world-qa"
    c_dir = work / "c_student-wrong"
    options = c_dir / "run_options.json"  # as if the run had been started here
    options.write_text(options.read_text().replace(str(out), str(copy)))
    assert any((c_dir / "checkpoints").glob("checkpoint-*"))
    for f in ("training.json", "adapter_model.safetensors", "adapter_config.json"):
        (c_dir / f).unlink()
    ev = work / "eval_v2.jsonl"
    lines = ev.read_text().splitlines(keepends=True)
    (work / "eval_v2.jsonl.partial").write_text("".join(lines[:5]))
    # what the interrupted run had recorded: its model (the adapter now under the copy), task
    run = json.loads((work / "eval_v2.jsonl.summary.json").read_text().replace(str(out), str(copy)))
    (work / "eval_v2.jsonl.resume.json").write_text(json.dumps(run))
    (work / "eval_v2.jsonl.summary.json").unlink()
    ev.unlink()
    shutil.rmtree(work / "compare")
    messages: list[str] = []
    again = run_demo(
        _again(copy, summary, ("world-qa",)),
        progress=messages.append,
    )
    assert "world-qa: continuing the compatibility adapter student-wrong" in messages
    assert "world-qa: reusing the task adapter on base v1" in messages
    assert again["tasks"]["world-qa"] == summary["tasks"]["world-qa"]


def test_tasks_in_worker_processes_give_the_same_figures(
    demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, summary = demo_run
    messages: list[str] = []
    par = run_demo(
        _again(tmp_path / "par", summary, ("world-qa", "world-dialog"), jobs=2),
        progress=messages.append,
    )
    assert par["tasks"] == summary["tasks"]
    # the workers' progress lines reach the caller
    for task in ("world-qa", "world-dialog"):
        assert any(m.startswith(f"{task}: evaluating the none adapter") for m in messages)


def test_ctrl_c_stops_the_worker_processes(demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    """SIGINT on a demo with worker processes: one "aborted" line, exit 130, and the workers
    stop with it (they went on with every step of their tasks while the demo waited for them
    in its exit; Ctrl-C, which reaches them too, stopped some and not others)."""
    import os
    import signal
    import subprocess
    import sys

    _, summary = demo_run
    cache = summary["scenario"]["root"].rsplit("/", 1)[0]
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "muscle", "demo", "--size", "tiny", "--cache-dir", cache]
    cmd += ["--out", str(out), "--task", "world-qa", "--task", "world-dialog", "--jobs", "2"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # both workers at work
        lines.append(line)
        if sum("training the task adapter on base v1" in x for x in lines) == 2:
            break
    os.kill(proc.pid, signal.SIGINT)  # the demo's process only: the workers must not need it
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, lines + [rest]
    assert rest.strip().splitlines()[-1] == "aborted" and "Traceback" not in rest, rest
    # no worker left running in the group (a killed one may linger as a zombie for its reaper)
    ps = subprocess.run(["ps", "-o", "stat=", "-g", str(proc.pid)], capture_output=True, text=True)
    assert all(state.startswith("Z") for state in ps.stdout.split()), ps.stdout
    assert not (out / "summary.json").exists()
    assert not [*out.glob("runs/*/*/m_v2"), *out.glob("runs/*/*/c_none")]  # no later step began


def test_an_interrupted_demo_gives_back_the_callers_ctrl_c(
    demo_run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted with worker processes, the demo stops them and re-raises with the caller's
    SIGINT handler in place (its own, which exits at once, only covers the clean-up)."""
    import concurrent.futures
    import signal

    _, summary = demo_run

    def interrupted(*a: object, **kw: object) -> None:
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(concurrent.futures, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(_again(tmp_path / "i", summary, ("world-qa", "world-dialog"), jobs=2))
    assert signal.getsignal(signal.SIGINT) is before


def test_cli_rejects_an_unknown_task(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path / "d"), "--task", "piqa", "--size", "tiny"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown demo task")
    assert not (tmp_path / "d" / "summary.json").exists()
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path / "d"), "--size", "huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # no progress line before it
    assert err == ["error: unknown scenario size 'huge'; use one of tiny, small"]
    assert not (tmp_path / "d").exists()


def test_fairness_warnings_flag_unconverged_task_models() -> None:
    from muscle.scenarios.demo import fairness_warnings

    levelled = [2.0, 1.0, 0.80, 0.70, 0.699, 0.698, 0.698]  # -0.3 % over the last 3 epochs
    falling = [2.0, 1.0, 0.80, 0.70, 0.65, 0.60, 0.56]  # -20 % over the last 3 epochs

    def summary(v2_curve: list[float], acc_none: float) -> dict:
        def run(curve: list[float]) -> dict:
            return {"epochs": [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(curve)]}

        return {
            "training": {"t": {"v1": run(levelled), "v2": run(v2_curve)}},
            "tasks": {"t": {"acc_v2": 0.50, "acc_none": acc_none}},
        }

    assert fairness_warnings(summary(levelled, 0.51)) == []
    assert fairness_warnings(summary(levelled, 0.52)) == []  # 2 points exactly: not flagged
    found = fairness_warnings(summary(falling, 0.60))
    assert len(found) == 2
    assert "t: M2: validation CE still fell by 20.0 %" in found[0]
    assert "10.0 points more accurate than M2" in found[1]
    # an early stop at a high learning rate (the share the summary carries) is pointed out
    hot = summary(levelled, 0.51)
    hot["training"]["t"]["v1"]["stopped_lr"] = 0.81
    hot["training"]["t"]["v2"]["stopped_lr"] = 0.30
    (msg,) = fairness_warnings(hot)
    assert msg.startswith("t: M1: early stopping ended the run with the learning rate at 81 %")
    # a MUSCLE run that aligned no training token to v1 is pointed out; one that did is not
    idle, busy = summary(levelled, 0.50), summary(levelled, 0.50)
    idle["training"]["t"]["student-wrong"] = {"epochs": [{"epoch": 1, "train_aligned_v1": 0.0}]}
    busy["training"]["t"]["student-wrong"] = {"epochs": [{"epoch": 1, "train_aligned_v1": 0.08}]}
    assert fairness_warnings(busy) == []
    (msg,) = fairness_warnings(idle)
    assert msg.startswith("t: MUSCLE: none of the training tokens were aligned")


@pytest.mark.slow  # the CLI's default recipe (up to 60 epochs, early stopping): minutes
def test_cli_runs_the_demo_on_the_exact_match_task(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture
) -> None:
    cache = tmp_path_factory.getbasetemp() / "muscle-scenarios"
    out = tmp_path / "demo"
    main(
        [
            "demo",
            "--out",
            str(out),
            "--task",
            "world-math",
            "--size",
            "tiny",
            "--cache-dir",
            str(cache),
        ]
    )
    printed = capsys.readouterr().out
    assert "world-math" in printed and "NFR v2C" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["tasks"]) == ["world-math"]
    row = summary["tasks"]["world-math"]
    assert 0.0 <= row["acc_v2c"] <= 1.0 and row["kind"] == "discrete"
    assert (out / "report.html").is_file()


def test_an_interrupted_run_leaves_no_earlier_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier run's summary.json and report.html are removed when a run starts (a run
    killed before its end would leave them, for other tasks, looking like its own); the work
    it continues from is kept."""
    import muscle.scenarios.demo as demo

    out = tmp_path / "dm"
    work = out / "runs" / "seed0-abc" / "world-qa"
    work.mkdir(parents=True)
    (work / "eval_v1.jsonl").write_text("{}\n")
    (out / "summary.json").write_text('{"tasks": {"world-qa": {}}}')
    (out / "report.html").write_text("<html>world-qa</html>")

    import types

    import muscle.io
    from muscle.errors import MuscleError

    def mistake(**kw: object) -> None:
        raise MuscleError("--cache-dir afile: exists and is not a folder")

    def built(**kw: object) -> object:
        return types.SimpleNamespace(recipe=types.SimpleNamespace(key=lambda: "k"))

    def killed(*a: object) -> None:
        raise KeyboardInterrupt

    cfg = DemoConfig(out=str(out), tasks=("world-math",), size="tiny", jobs=1)
    monkeypatch.setattr(demo, "build_scenario", mistake)
    with pytest.raises(MuscleError):
        run_demo(cfg)
    assert (out / "summary.json").exists()  # a user mistake loses nothing
    monkeypatch.setattr(demo, "build_scenario", built)
    monkeypatch.setattr(muscle.io, "sha256_text", killed)  # killed once the run has started
    with pytest.raises(KeyboardInterrupt):
        run_demo(cfg)
    assert not (out / "summary.json").exists() and not (out / "report.html").exists()
    assert (work / "eval_v1.jsonl").read_text() == "{}\n"
