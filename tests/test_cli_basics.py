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
