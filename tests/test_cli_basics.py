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
