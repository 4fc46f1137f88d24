"""A plain (non-editable) install ships what users need: rubrics, example data, the CLI code."""

import os
import subprocess
import sys
import zipfile

from irtpeer_paths import REPO


def test_wheel_contents_and_installed_copy_work(tmp_path):
    # build the wheel without network (setuptools from the running environment)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "wheel"), str(REPO)], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("irtpeer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ["irtpeer/rubrics/persona.toml", "irtpeer/rubrics/audit.toml",
                   "irtpeer/data/example_ratings.parquet", "irtpeer/data/example_truth.csv",
                   "irtpeer/harness/judge.py", "irtpeer/estimators/_torch.py", "irtpeer/cli/score.py"]:
        assert needed in names, needed
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    code = (
        "import irtpeer, sys; assert irtpeer.__file__.startswith(sys.argv[1]), irtpeer.__file__;"
        "from irtpeer.harness.rubrics import load_rubric; r = load_rubric('persona');"
        "assert r.dimension_ids == ['A', 'T', 'E', 'C'], r.dimension_ids;"
        "cal = irtpeer.calibrate(irtpeer.example_path()); print(len(cal.scores))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "5"
