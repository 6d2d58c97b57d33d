import subprocess
import sys


def test_python_m_muscle_help():
    out = subprocess.run([sys.executable, "-m", "muscle", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "muscle" in out.stdout.lower()


def test_unknown_option_is_one_line_exit_2():
    out = subprocess.run(
        [sys.executable, "-m", "muscle", "--no-such-flag"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "Traceback" not in out.stderr


def test_every_command_has_a_one_line_summary():
    """The command listings show a help's first paragraph with its line breaks: keep it one line."""
    import inspect

    import typer

    from muscle.cli import app

    def walk(cmd, path: str):
        yield path, cmd
        if getattr(cmd, "commands", None):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, f"{path} {name}")

    commands = list(walk(typer.main.get_command(app), "muscle"))
    assert {"muscle compare", "muscle eval", "muscle demo", "muscle train task"} <= {
        p for p, _ in commands
    }
    for path, cmd in commands:
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
        assert first and "\n" not in first, f"{path}: {first!r}"


def test_ctrl_c_exits_130_with_one_line():
    """Ctrl-C during a command: exit code 130 and "aborted" (click, run without its standalone
    mode, *returns* 130, which the entry point once dropped: exit 0, so `muscle … && next` ran
    on)."""
    import signal
    import time

    script = (
        "import sys, time\n"
        "import muscle.compare\n"
        "def slow(*a, **k):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "muscle.compare.compare_files = slow\n"
        "from muscle.cli import main\n"
        "main(['compare', 'a.jsonl', 'b.jsonl'])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)  # generous: a loaded machine starts Python slowly
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "aborted"


def test_version_is_single_sourced():
    from importlib.metadata import version

    import muscle

    out = subprocess.run(
        [sys.executable, "-m", "muscle", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"muscle-llm {muscle.__version__}"
    assert version("muscle-llm") == muscle.__version__  # pyproject reads it from the package


def test_bad_values_and_paths_are_one_line_exit_2(tmp_path, capsys):
    """Paths that cannot be written, non-finite or out-of-range numbers: one line, exit 2,
    before any work (no model is loaded here: the checks come first)."""
    import json

    import pytest

    from muscle.cli import main

    rows = "".join(json.dumps({"id": i, "correct": i % 2 == 0}) + "\n" for i in range(6))
    (tmp_path / "a.jsonl").write_text(rows)
    (tmp_path / "afile").write_text("x")
    a, afile = str(tmp_path / "a.jsonl"), str(tmp_path / "afile")
    train = ["train", "task", "--model", str(tmp_path / "nomodel"), "--task", "piqa"]
    cases = [
        (["compare", a, a, "--out", afile + "/sub"], "afile/sub"),
        (["compare", a, a, "--epsilon", "nan"], "--epsilon nan: must be a finite number"),
        (["compare", a, a, "--out", ""], "--out is empty"),
        (["compare", a, str(tmp_path)], "a folder; give the results file in it"),
        (["eval", "--model", str(tmp_path), "--task", "piqa", "--out", afile + "/e.jsonl"],
         "afile is a file, not a folder"),
        ([*train, "--out", str(tmp_path / "o"), "--seed", "-1"], "--seed -1: must be in"),
        ([*train, "--out", str(tmp_path / "o"), "--lr", "nan"], "must be a finite number"),
        (["train", "compat", "--new-model", "m", "--new-adapter", "a", "--task", "piqa",
          "--out", str(tmp_path / "o"), "--mask", "focal", "--old-model", "m",
          "--focal-alpha", "-1"], "--focal-alpha and --focal-beta must be >= 0"),
        (["demo", "--seed", "-1", "--out", str(tmp_path / "d")], "--seed -1: must be in"),
    ]  # fmt: skip
    for argv, message in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "afile"]  # nothing written


def test_only_the_muscle_command_ends_a_torchrun_process_at_once(monkeypatch, capsys):
    """Under a process group, ``run`` (the command) leaves it and ends the process with the
    command's exit code and its exit handlers run; ``main`` (for scripts) just returns."""
    import atexit

    import pytest
    import torch.distributed as dist

    import muscle.cli as cli

    calls: list = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: calls.append("atexit"))

    def fake_exit(code: int) -> None:
        calls.append(code)
        raise RuntimeError("exited")

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", "nope.jsonl", "nope.jsonl"])
    assert exc.value.code == 2 and calls == []  # main: nothing left, nothing ended
    monkeypatch.setattr(cli.sys, "argv", ["muscle", "compare", "nope.jsonl", "nope.jsonl"])
    with pytest.raises(RuntimeError, match="exited"):
        cli.run()
    assert calls == ["destroy", "atexit", 2]
    calls.clear()
    monkeypatch.setattr(cli.sys, "argv", ["muscle", "--version"])
    with pytest.raises(RuntimeError, match="exited"):
        cli.run()
    assert calls == ["destroy", "atexit", 0]
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_task_options_name_every_registered_task():
    import typer

    from muscle.cli import app
    from muscle.tasks import list_tasks

    cmd = typer.main.get_command(app)
    for path in (("eval",), ("train", "task"), ("train", "compat")):
        sub = cmd
        for name in path:
            sub = sub.commands[name]
        helps = [p.help for p in sub.params if "--task" in getattr(p, "opts", [])]
        assert helps and all(t in helps[0] for t in list_tasks()), (path, helps)


def test_train_compat_top_k_without_the_teacher_cache_is_one_line(tmp_path, capsys, monkeypatch):
    """``--top-k`` sets what the teacher cache keeps: given without ``--cache-teachers`` (even
    at its default value) it would change nothing, so it is refused; with the cache, or left
    out, it reaches the config (default 64)."""
    import pytest

    import muscle.training
    from muscle.cli import main

    seen: list = []
    monkeypatch.setattr(muscle.training, "train_compat_adapter", lambda cfg: seen.append(cfg))
    monkeypatch.setattr("muscle.cli._train_summary", lambda res: None)
    argv = ["train", "compat", "--new-model", "m", "--new-adapter", "a", "--old-model", "m",
            "--task", "piqa", "--out", str(tmp_path / "o")]  # fmt: skip
    for k in ("16", "64"):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--top-k", k])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: --top-k {k} sets the log-probs the teacher cache keeps")
        assert "--cache-teachers" in err
    main([*argv, "--cache-teachers", "--top-k", "16"])
    main(argv)
    assert [(c.cache_teachers, c.top_k) for c in seen] == [(True, 16), (False, 64)]
    assert not (tmp_path / "o").exists()
