"""Mistakes a new user makes get one line on stderr, before any model weights load (issue 12, 13/15)."""

from __future__ import annotations

import json

import pytest
from lagdpo_testutils import make_records, save_tiny

from lagdpo.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any model weights are loaded."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def _write(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path


def _train(capsys, method, model, data, out, *extra):
    argv = ["train", "--method", method, "--model", str(model), "--data", str(data)]
    rc = main([*argv, "--output-dir", str(out), "--max-steps", "1", *extra])
    captured = capsys.readouterr()
    return rc, captured.err


def _one_line(err: str) -> str:
    assert err.startswith("lagdpo: error: ") and err.count("\n") == 1, err
    return err


def test_modpo_without_margins_is_one_line_before_loading_the_model(
    tiny_dir, tmp_path, capsys, no_weights
):
    data = _write(tmp_path / "pk.jsonl", make_records(4))
    rc, err = _train(capsys, "modpo", tiny_dir, data, tmp_path / "o")
    assert rc == 2
    assert "modpo needs margins" in _one_line(err) and "modpo_rewards" in err


def test_modpo_reward_model_path_that_does_not_exist(tiny_dir, tmp_path, capsys, no_weights):
    data = _write(tmp_path / "pk.jsonl", make_records(4))
    missing = tmp_path / "rm-A"
    rc, err = _train(
        capsys,
        "modpo",
        tiny_dir,
        data,
        tmp_path / "o",
        "--modpo-reward-models",
        f"{{A: {missing}}}",
    )
    assert rc == 2
    assert f"modpo_reward_models['A'] = '{missing}' does not exist" in _one_line(err)


def test_bad_data_is_reported_before_the_model_loads(tiny_dir, tmp_path, capsys, no_weights):
    records = make_records(4)
    records[2]["golden"] = ""
    data = _write(tmp_path / "pk.jsonl", records)
    rc, err = _train(capsys, "lagdpo", tiny_dir, data, tmp_path / "o")
    assert rc == 2
    assert "record 2" in _one_line(err) and "'golden' is empty" in err


def test_model_path_that_does_not_exist(tmp_path, capsys):
    data = _write(tmp_path / "pk.jsonl", make_records(4))
    missing = tmp_path / "models" / "tiny"
    rc, err = _train(capsys, "lagdpo", missing, data, tmp_path / "o")
    assert rc == 2
    assert f"model path '{missing}' does not exist" in _one_line(err)


def test_unknown_hub_id_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _write(tmp_path / "pk.jsonl", make_records(4))
    rc, err = _train(capsys, "lagdpo", "nobody/no-such-model", data, tmp_path / "o")
    assert rc == 2
    assert "cannot load the model from 'nobody/no-such-model'" in _one_line(err)


def test_sft_anchor_with_personaknob_data_only_refuses_and_says_what_to_do(
    tiny_dir, tmp_path, capsys, no_weights
):
    data = _write(tmp_path / "pk.jsonl", make_records(4))
    rc, err = _train(capsys, "sft-anchor", tiny_dir, data, tmp_path / "o")
    assert rc == 2
    line = _one_line(err)
    assert "sft-anchor trains on anchor SFT data only" in line
    assert "--anchor-data" in line and "sft-combined" in line
    assert not (tmp_path / "o").exists()


def test_sft_anchor_trains_on_the_anchor_data_not_the_personaknob_data(tiny_dir, tmp_path):
    from lagdpo_testutils import fast_settings

    from lagdpo.training import train

    anchor = _write(tmp_path / "a.jsonl", [{"prompt": "tell me a story", "completion": "new"}] * 3)
    result = train(
        "sft-anchor",
        tiny_dir,
        make_records(8),
        tmp_path / "o",
        config=fast_settings(anchor_data=str(anchor)),
        max_steps=1,
    )
    assert len(result.trainer.train_dataset) == 3  # the 3 anchor records, none of the 8 PK ones
