"""PersonaKnob loading, validation, tokenisation and batching."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from lagdpo_testutils import build_tokenizer, make_records

from lagdpo.data import (
    MultiNegCollator,
    flatten_to_pairs,
    load_personaknob,
    load_sft_data,
    parse_mask,
    tokenize_personaknob,
)
from lagdpo.errors import DataError


@pytest.mark.parametrize(
    "value, expected",
    [
        (["E", "A"], ["A", "E"]),
        ('["E","A"]', ["A", "E"]),
        ("['C', 't']", ["T", "C"]),
        ("E,A", ["A", "E"]),
        ("E A C", ["A", "E", "C"]),
        ("EA", ["A", "E"]),
        ("T", ["T"]),
    ],
)
def test_parse_mask_forms(value, expected):
    assert parse_mask(value) == expected


def test_parse_mask_rejects_unknown_dimension():
    with pytest.raises(DataError, match="unknown dimension 'X'"):
        parse_mask(["E", "X"])
    with pytest.raises(DataError, match="no active dimension"):
        parse_mask([])


def test_load_csv_json_jsonl_and_saved_dataset_agree(tmp_path):
    records = make_records(6)
    csv_rows = [{**r, "mask": json.dumps(r["mask"])} for r in records]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "pk.csv", index=False)
    (tmp_path / "pk.json").write_text(json.dumps(records))
    (tmp_path / "pk.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "pk_ds"))
    loaded = [
        load_personaknob(tmp_path / name) for name in ("pk.csv", "pk.json", "pk.jsonl", "pk_ds")
    ]
    for ds in loaded:
        assert len(ds) == 6
        assert ds["mask"] == loaded[0]["mask"]
        assert ds["dim_mask"] == loaded[0]["dim_mask"]
        assert ds["reject_C"] == loaded[0]["reject_C"]
        assert "seed_scene" in ds.column_names  # extra columns kept
    # mask ["E","A"] → dim_mask over A, T, E, C
    assert loaded[0]["dim_mask"][1] == [True, False, True, False]
    # inactive rejections are empty strings in CSV (not NaN)
    assert loaded[0]["reject_A"][2] == ""


def test_validation_errors_name_record_and_column():
    good = make_records(3)
    bad = [dict(r) for r in good]
    bad[1]["reject_E"] = "   "
    bad[1]["mask"] = ["E"]
    with pytest.raises(DataError, match=r"record 1: dimension E is active .* 'reject_E' is empty"):
        load_personaknob(bad)
    bad = [dict(r) for r in good]
    del bad[0]["reject_T"]
    bad[0]["mask"] = ["T"]
    with pytest.raises(DataError, match="'reject_T' is missing"):
        load_personaknob(bad)
    bad = [dict(r) for r in good]
    bad[2]["prompt"] = ""
    with pytest.raises(DataError, match="record 2: column 'prompt' is empty"):
        load_personaknob(bad)
    bad = [dict(r) for r in good]
    bad[0]["mask"] = "A,Q"
    with pytest.raises(DataError, match="record 0.*unknown dimension 'Q'"):
        load_personaknob(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_personaknob("/nonexistent/pk.csv")


def test_tokenize_with_chat_template_and_collate_layout():
    tok = build_tokenizer()
    ds = load_personaknob(make_records(3, masks=[["A", "T", "E", "C"], ["E", "A"], ["T"]]))
    rows = [tokenize_personaknob(r, tok) for r in ds]
    # prompt rendered through the chat template, completion = assistant content + </s>
    assert tok.decode(rows[0]["prompt_ids"]).split()[:2] == ["<user>", "tell"]
    assert tok.decode(rows[0]["prompt_ids"]).split()[-1] == "<assistant>"
    assert tok.decode(rows[0]["chosen_ids"]).split()[0] == "honest"
    assert tok.decode(rows[0]["chosen_ids"]).split()[-1] == "</s>"
    assert rows[1]["rejected_ids"][1] == [] and rows[1]["rejected_ids"][3] == []
    assert tok.decode(rows[1]["rejected_ids"][2]).split()[0] == "cold"

    batch = MultiNegCollator(pad_token_id=tok.pad_token_id)(rows)
    # 3 chosen rows + 4 + 2 + 1 rejections, one forward pass
    assert batch["input_ids"].shape[0] == 3 + 7
    assert batch["rejected_record"].tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert batch["rejected_dim"].tolist() == [0, 1, 2, 3, 0, 2, 1]
    assert batch["dim_mask"].tolist() == [
        [True] * 4,
        [True, False, True, False],
        [False, True, False, False],
    ]
    # completion mask covers exactly the completion tokens of each row
    for i, row in enumerate(rows):
        assert batch["completion_mask"][i].sum().item() == len(row["chosen_ids"])
        assert batch["attention_mask"][i].sum().item() == len(row["prompt_ids"]) + len(
            row["chosen_ids"]
        )
    r = 3 + 5  # record 2's T rejection
    assert batch["completion_mask"][r].sum().item() == len(rows[2]["rejected_ids"][1])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_token_id).all()


def test_tokenize_without_chat_template_appends_eos():
    tok = build_tokenizer(chat=False)
    rec = load_personaknob(make_records(1))[0]
    row = tokenize_personaknob(rec, tok)
    assert (
        row["prompt_ids"]
        == tok("tell me about topic0 please", add_special_tokens=False)["input_ids"]
    )
    assert row["chosen_ids"][-1] == tok.eos_token_id


def test_sft_data_forms(tmp_path):
    pc = [{"prompt": "tell me", "completion": "honest answer"}]
    (tmp_path / "pc.jsonl").write_text(json.dumps(pc[0]))
    assert load_sft_data(tmp_path / "pc.jsonl")["completion"] == ["honest answer"]
    chat = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]}
    ]
    assert load_sft_data(chat)["messages"][0][1]["content"] == "yes"
    persona = load_sft_data(make_records(2))
    assert persona.column_names == ["prompt", "completion"] and persona["completion"][0].startswith(
        "honest"
    )
    with pytest.raises(DataError, match="SFT data needs columns"):
        load_sft_data([{"text": "x"}])


def test_flatten_to_pairs_counts_active_rejections():
    ds = load_personaknob(make_records(3, masks=[["A", "T", "E", "C"], ["E", "A"], ["T"]]))
    pairs = flatten_to_pairs(ds)
    assert len(pairs) == 7
    assert pairs["dimension"] == ["A", "T", "E", "C", "A", "E", "T"]
    assert torch.tensor([c == ds["golden"][0] for c in pairs["chosen"][:4]]).all()
