"""`--config` files as TOML/YAML users write them: options at the top level, or in a table named
after the command (`[score]`, `score:`); one file can hold tables for several commands. Values
of the wrong shape get one line that names the option (no traceback)."""

import json

import pytest

import irtpeer
from irtpeer.cli import main


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "r.parquet"
    irtpeer.simulate(models=4, questions=25, judges=2, dimensions="A", seed=3).ratings.to_parquet(path)
    return path


def _score(path, out, config, *flags):
    return main(["score", str(path), "--out", str(out), "--config", str(config), *flags])


def _penalty(out) -> float:
    return json.loads((out / "calibration.json").read_text())["options"]["penalty"]


@pytest.mark.parametrize("name, text", [
    ("s.toml", '[score]\npenalty = 0.5\nse-facets = "model"\n'),
    ("s.yaml", "score:\n  penalty: 0.5\n  se-facets: model\n"),
    # top-level `score` is the score column; the [report] table belongs to `irtpeer report`
    ("m.toml", 'score = "score"\npenalty = 0.5\n[report]\ntitle = "not an option of score"\n'),
])
def test_a_table_named_after_the_command_holds_its_options(ratings_file, tmp_path, name, text):
    cfg = tmp_path / name
    cfg.write_text(text)
    assert _score(ratings_file, tmp_path / "o", cfg) == 0
    assert _penalty(tmp_path / "o") == 0.5
    assert _score(ratings_file, tmp_path / "f", cfg, "--penalty", "0.1") == 0  # flags win
    assert _penalty(tmp_path / "f") == 0.1


@pytest.mark.parametrize("text, message", [
    ("penalty = [1, 2]\n", "option 'penalty' is a list ([1, 2]); give it one value"),
    ('[penalty]\nvalue = 1\n', "option 'penalty' is a table"),
    ("[scroe]\npenalty = 1\n", "unknown option 'scroe'"),
])
def test_values_of_the_wrong_shape_are_one_line(ratings_file, tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert _score(ratings_file, tmp_path / "o", cfg) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
