"""`irtpeer dataset` with bad input (one line, exit 2, nothing sent), a YAML config with --limit,
the regeneration limit, an unparseable reply (re-asked once, then a failure with its reason), a
failed call retried by a rerun, and the pieces that decide instances (seeded plan, scene split)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import yaml
from dataset_fake import DatasetFakeServer
from dataset_support import write_config
from harness_support import TEST_KEY, run_cli

from irtpeer.harness.dataset import (
    length_overlap,
    load_build_config,
    plan_instances,
    split_by_scene,
)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("IRTPEER_TEST_KEY", TEST_KEY)


def _edit(cfg, old, new, name):
    p = cfg.with_name(name)
    text = cfg.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    return p


BAD = [
    ("demos = 1", "demoz = 1", "unknown key(s) ['demoz']"),
    ('dimensions = ["A", "T"]', 'dimensions = ["A", "X"]', "portions[0]: `dimensions` names ['X']"),
    ("count = 8", "count = 0", "portions[0]: `count` = 0; give an integer >= 1"),
    ("[verifier]", "[verifierx]", "unknown key(s) ['verifierx']"),
    ("max_tokens = 512", "max_tokens = 512, seed = 3", "`sampling.seed` is not used"),
    ("test_fraction = 0.2", "test_fraction = 1.5", "`test_fraction` = 1.5"),
    ('model = "verifier-nano"', 'model = "gen-a"', "both labelled 'gen-a'"),
    ('sources = ["health", "work", "family"]', "sources = []", "`sources` = []"),
    (
        "demos = 1",
        'demos = 1\ntask_formats = ["quiz"]',
        "task format(s) ['quiz'] have no definition",
    ),
    ('anchors = "anchors.jsonl"', 'anchors = "missing.jsonl"', "anchors file file not found"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD)
def test_bad_config_is_one_line_naming_the_key_and_sends_nothing(
    tmp_path, key, capsys, old, new, message
):
    with DatasetFakeServer() as srv:
        cfg = _edit(write_config(tmp_path, srv.url), old, new, "bad.toml")
        rc = run_cli(["dataset", "build", cfg, "--out", tmp_path / "o", "--no-progress"])
        assert srv.count == 0
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err


def test_other_bad_inputs(tmp_path, key, capsys):
    cfg = write_config(tmp_path, "http://127.0.0.1:9/v1")
    cases = [
        (["dataset", "build", cfg], "no output folder: pass --out DIR or set `out`"),
        (["dataset", "build", tmp_path / "nope.toml", "--out", tmp_path], "does not exist"),
        (["dataset", "build", cfg, "--out", tmp_path / "o", "--limit", "0"], "--limit must be"),
        (["dataset", "accept", tmp_path, tmp_path / "r.csv"], "has no instances.jsonl"),
    ]
    for argv, message in cases:
        assert run_cli(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    anchors = tmp_path / "anchors.jsonl"
    kept = [line for line in anchors.read_text().splitlines(True) if '"C"' not in line]
    anchors.write_text("".join(kept))
    assert run_cli(["dataset", "build", cfg, "--out", tmp_path / "o"]) == 2
    assert "has no example for dimension(s) ['C'], which a portion" in capsys.readouterr().err
    dims = tmp_path / "dims.toml"
    dims.write_text(
        'id = "x"\nversion = "1"\n[[dimensions]]\nid = "H"\nname = "Humour"\n'
        'failure_mode = "f"\ndesired_behavior = "d"\ndefinition = "x"\n'
    )
    bad = _edit(cfg, "demos = 1", 'demos = 0\ndimensions = "dims.toml"', "dims.toml.toml")
    assert run_cli(["dataset", "build", bad, "--out", tmp_path / "o"]) == 2
    assert "dimension id 'H' is not one of ['A', 'T', 'E', 'C']" in capsys.readouterr().err


def test_yaml_config_limit_and_regeneration_limit_zero(tmp_path, key, capsys):
    """A YAML config, --limit 4 (interleaved over portions), and max_regenerations = 0: a planted
    two-dimension negative is dropped at once, with its reason; the build still completes."""
    with DatasetFakeServer(two_dim={("AT-0000", "T")}) as srv:
        toml = write_config(tmp_path, srv.url, max_regenerations=0)
        import tomllib

        data = tomllib.loads(toml.read_text())
        cfg = tmp_path / "build.yaml"
        cfg.write_text(yaml.safe_dump(data))
        out = tmp_path / "o"
        assert (
            run_cli(["dataset", "build", cfg, "--out", out, "--limit", "4", "--no-progress"]) == 0
        )
    recs = {r["id"]: r for r in map(json.loads, (out / "instances.jsonl").read_text().splitlines())}
    assert sorted(recs) == ["AEC-0000", "AT-0000", "ATEC-0000", "TE-0000"]
    assert recs["AT-0000"]["status"] == "dropped"
    assert "limit of 0 regenerations" in recs["AT-0000"]["reason"]
    assert "N2" in recs["AT-0000"]["reason"]
    assert "3 verified, 1 dropped, 0 failed" in capsys.readouterr().out


def test_unparseable_reply_is_reasked_once_then_a_failure_with_its_reason(tmp_path, key):
    with DatasetFakeServer() as srv:
        # every attribution request of AT-0001 gets a cut-off reply
        srv.add_fault("malformed", match="CTX[AT-0001|", times=100)
        cfg = write_config(tmp_path, srv.url, counts=(3, 0, 0, 0), max_regenerations=1)
        out = tmp_path / "o"
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 0
        attribution_requests = [r for r in srv.requests if "CTX[AT-0001|" in json.dumps(r["body"])]
    # two attempts (the first and one regeneration), each asked and re-asked once
    assert len(attribution_requests) == 4
    rec = next(
        r for r in map(json.loads, (out / "instances.jsonl").read_text().splitlines())
        if r["id"] == "AT-0001"
    )  # fmt: skip
    assert rec["status"] == "dropped" and rec["reasks"] == 2
    assert rec["reason"].startswith("invalid_reply: the reply was not usable (not valid JSON")
    assert "after re-ask" in rec["reason"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["judgments_invalid"] == 2 and m["counts"]["reasks"] == 2


def test_failed_call_makes_exit_1_and_a_rerun_retries_only_it(tmp_path, key, capsys):
    with DatasetFakeServer() as srv:
        srv.add_fault("status", status=400, match="CTX[AT-0002|", times=1)  # not retried
        cfg = write_config(tmp_path, srv.url, counts=(3, 0, 0, 0))
        out = tmp_path / "o"
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 1
        assert "rerun the same command" in capsys.readouterr().err
        recs = {
            r["id"]: r for r in map(json.loads, (out / "instances.jsonl").read_text().splitlines())
        }
        assert recs["AT-0002"]["status"] == "failed" and "http_400" in recs["AT-0002"]["reason"]
        assert json.loads((out / "manifest.json").read_text())["status"] == "incomplete"
        assert "AT-0002" not in (out / "review.csv").read_text()
        before = srv.count
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 0
        # attribution, reference, two negatives, V, R, two N checks of AT-0002 only
        assert srv.count - before == 8
    rows = list(csv.DictReader((out / "review.csv").open()))
    assert [r["instance_id"] for r in rows] == ["AT-0000", "AT-0001", "AT-0002"]


def test_accept_rejects_bad_review_files(tmp_path, key, capsys):
    with DatasetFakeServer() as srv:
        cfg = write_config(tmp_path, srv.url, counts=(2, 0, 0, 0))
        out = tmp_path / "o"
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 0
    capsys.readouterr()
    head = "instance_id,accept,reject,comment\n"
    cases = [
        (
            head + "AT-0000,x,x,\n",
            "row 2: instance 'AT-0000' is marked both accept ('x') and reject",
        ),
        (head + "AT-0009,x,,\n", "row 2: instance_id 'AT-0009' is not a verified instance"),
        (head + "AT-0000,x,,\nAT-0000,,x,\n", "row 3: instance_id 'AT-0000' appears twice"),
        (head + "AT-0000,,x,\n", "no instance is accepted"),
        ("instance_id,ok\nAT-0000,x\n", "lacks the column(s) ['accept', 'reject']"),
    ]
    for i, (text, message) in enumerate(cases):
        p = tmp_path / f"r{i}.csv"
        p.write_text(text)
        assert run_cli(["dataset", "accept", out, p]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (out / "personaknob.jsonl").exists()
    p = tmp_path / "ok.csv"
    p.write_text(head + "AT-0000,yes,,\nAT-0001,0,1,too long\n")
    assert run_cli(["dataset", "accept", out, p, "--test-fraction", "0"]) == 0
    assert "1 accepted, 1 rejected, 0 unreviewed (human pass rate 0.5)" in capsys.readouterr().out


def test_plan_is_seeded_and_balanced(tmp_path, key):
    cfg = load_build_config(write_config(tmp_path, "http://127.0.0.1:9/v1"))
    a, b = plan_instances(cfg), plan_instances(cfg)
    assert [(i.id, i.task_format, i.source) for i in a] == [
        (i.id, i.task_format, i.source) for i in b
    ]
    assert [i.id for i in a[:5]] == ["AT-0000", "TE-0000", "AEC-0000", "ATEC-0000", "AT-0001"]
    for p in ("AT", "TE", "AEC"):  # 8 instances each: formats alternate, 4 and 4
        fmts = [i.task_format for i in a if i.portion == p]
        assert fmts.count("selection") == fmts.count("generation") == 4
    other = load_build_config(
        write_config(tmp_path, "http://127.0.0.1:9/v1", seed=8, name="s8.toml")
    )
    assert [i.source for i in plan_instances(other)] != [i.source for i in a]


def test_split_keeps_each_seed_scene_on_one_side():
    recs = [
        {"id": f"i{k}", "seed_scene": f"Scene  {k % 6}" if k % 2 else f"scene {k % 6}"}
        for k in range(60)
    ]
    split = split_by_scene(recs, 0.25, seed=3)
    side = {}
    for r in recs:
        key = " ".join(r["seed_scene"].lower().split())
        assert side.setdefault(key, split[r["id"]]) == split[r["id"]]
    n_test = sum(v == "test" for v in split.values())
    assert n_test == 20  # whole scenes of 10: the first two in the seeded order reach 15
    assert split == split_by_scene(recs, 0.25, seed=3)
    assert all(v == "train" for v in split_by_scene(recs, 0.0, seed=3).values())
    one = [{"id": "a", "seed_scene": "s"}, {"id": "b", "seed_scene": "s"}]
    assert set(split_by_scene(one, 0.5, seed=0).values()) == {"train"}  # train never empty


def test_length_overlap():
    assert length_overlap([10, 11, 12], [10, 11, 12]) == pytest.approx(1.0)
    assert length_overlap([1, 2, 3], [100, 101, 102]) == 0.0
    assert length_overlap([], [1]) is None
    # half of b's mass shares a's bins: [0, 10) twice against [0, 10) and [90, 100]
    assert length_overlap([0, 0], [0, 100], bins=10) == pytest.approx(0.5)


def test_refused_key_stops_the_build_with_an_aborted_manifest(tmp_path, key, capsys):
    with DatasetFakeServer(api_key="sk-the-right-key-000000000000") as srv:
        cfg = write_config(tmp_path, srv.url, counts=(3, 0, 0, 0))
        out = tmp_path / "o"
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 2
        assert srv.count <= 3  # one canary call per generator endpoint, not one per instance
    err = capsys.readouterr().err
    assert "HTTP 401" in err and err.count("\n") == 1 and TEST_KEY not in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "aborted" and m["counts"]["fatal_http_401"] >= 1
    assert not (out / "instances.jsonl").exists()


def test_marks_survive_a_rerun_only_for_unchanged_instances(tmp_path):
    from irtpeer.harness.dataset.review import REVIEW_COLUMNS, _carry_marks

    def row(iid, ref, **kw):
        r = dict.fromkeys(REVIEW_COLUMNS, "")
        r.update(instance_id=iid, mask="A", prompt="p", reference=ref, reject_A="n", **kw)
        return r

    cols = REVIEW_COLUMNS
    old = [
        row("a", "r1", accept="x", comment="ok"),
        row("b", "r2", reject="x"),
        row("c", "r3", accept="x"),
    ]
    pd.DataFrame(old, columns=cols).to_csv(tmp_path / "review.csv", index=False)
    new = pd.DataFrame([row("a", "r1"), row("b", "r2-changed"), row("d", "r4")], columns=cols)
    got = _carry_marks(new, tmp_path / "review.csv").set_index("instance_id")
    assert (got.at["a", "accept"], got.at["a", "comment"]) == ("x", "ok")
    assert got.at["b", "reject"] == "" and got.at["d", "accept"] == ""  # changed text, new row


def test_lengths_in_tokens_of_a_given_tokenizer(tmp_path, key, tiny_chat_model, capsys):
    """`length_tokenizer`: lengths are counted by that tokenizer (here a whitespace word-level one,
    so tokens equal words; the statistic's name says which unit was counted)."""
    with DatasetFakeServer() as srv:
        extra = f'length_tokenizer = "{tiny_chat_model}"'
        cfg = write_config(tmp_path, srv.url, counts=(3, 0, 0, 0), extra=extra)
        out = tmp_path / "o"
        assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 0
    stats = {
        (r["statistic"], r["group"]): r["value"] for r in csv.DictReader((out / "stats.csv").open())
    }
    recs = [json.loads(x) for x in (out / "instances.jsonl").read_text().splitlines()]
    words = [len(r["reference"].split()) for r in recs]
    assert float(stats[("length_tokens_reference", "mean")]) == pytest.approx(
        sum(words) / 3, abs=0.01
    )
    assert not any(k[0].startswith("length_words") for k in stats)
    bad = _edit(cfg, extra, 'length_tokenizer = "no/such-tokenizer-dir"', "badtok.toml")
    capsys.readouterr()
    assert run_cli(["dataset", "build", bad, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "`length_tokenizer` = 'no/such-tokenizer-dir' cannot be loaded" in err
    assert err.count("\n") == 1
