"""The `irtpeer` console script is the same program as `python -m irtpeer`: `cli.program`, which
ends without the interpreter's teardown once the work is done (see test_program_exit.py)."""

import subprocess
import sys
from importlib.metadata import entry_points

import irtpeer

CALL_PROGRAM = "import sys; from irtpeer.cli import program; sys.argv[0] = 'irtpeer'; program()"


def test_console_script_entry_is_the_program():
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "irtpeer"]
    assert ep.value == "irtpeer.cli:program"


def test_program_writes_the_files_and_returns_the_exit_code(tmp_path):
    sim = irtpeer.simulate(models=4, questions=20, judges=2, dimensions="A", seed=2)
    path = tmp_path / "r.parquet"
    sim.ratings.to_parquet(path)
    run = [sys.executable, "-c", CALL_PROGRAM]
    ok = subprocess.run([*run, "score", str(path), "--out", str(tmp_path / "o")], check=False,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.endswith("calibration.json\n")
    assert (tmp_path / "o" / "scores.csv").read_text().startswith("model,")
    bad = subprocess.run([*run, "score", str(tmp_path / "missing.parquet")], check=False,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "ratings file not found" in bad.stderr
