"""`python -m irtpeer` ends without the interpreter's teardown (exit_now), and loses nothing a
normal exit gives: the exit code, buffered output, atexit callbacks, threads still working."""

import subprocess
import sys

import pytest

import irtpeer

SCRIPT = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from irtpeer.cli._common import exit_now

def late():
    time.sleep(0.3)
    open(sys.argv[1], "w").write("thread finished")

if sys.argv[2] == "thread":
    threading.Thread(target=late).start()
if sys.argv[2] == "executor":  # left open: its idle worker must not hold the exit
    pool = ThreadPoolExecutor(2)
    pool.submit(time.sleep, 0.01).result()
atexit.register(lambda: print("atexit ran"))
print("buffered", end=" ")  # stdout is a pipe: block-buffered until flushed
sys.stderr.write("on stderr")
exit_now(3)
"""


@pytest.mark.parametrize("other", ["none", "thread", "executor"])
def test_exit_now_keeps_code_output_callbacks_and_threads(tmp_path, other):
    marker = tmp_path / "marker.txt"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(marker), other], check=False,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3
    assert res.stdout == "buffered atexit ran\n"
    assert res.stderr == "on stderr"
    assert marker.exists() == (other == "thread")
    if other == "thread":
        assert marker.read_text() == "thread finished"


def test_score_as_a_program_exit_codes_and_files(tmp_path):
    sim = irtpeer.simulate(models=4, questions=20, judges=2, dimensions="A", seed=1)
    path = tmp_path / "r.parquet"
    sim.ratings.to_parquet(path)
    out = tmp_path / "out"
    ok = subprocess.run([sys.executable, "-m", "irtpeer", "score", str(path), "--out", str(out)],
                        check=False, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "Wrote" in ok.stdout and ok.stdout.endswith("calibration.json\n")
    assert (out / "measures.csv").read_text().startswith("dimension,facet,element,measure")
    bad = subprocess.run([sys.executable, "-m", "irtpeer", "score", str(tmp_path / "none.csv")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("irtpeer: error:")
