"""`irtpeer dataset build` and `irtpeer dataset accept` as a user runs them, against a real HTTP
server on 127.0.0.1 (the scripted DatasetFakeServer) through the real openai client: a build of 30
instances over four portion configs with 429s, 500s and a malformed reply, planted bad instances,
the review loop, and a training file that lagdpo's own loader accepts and trains on."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
from dataset_fake import DatasetFakeServer
from dataset_support import write_config
from harness_support import TEST_KEY, run_cli

PLANTED = {
    "bad_attribution": {"AT-0001", "TE-0003"},
    "two_dim": {("TE-0002", "E"), ("AEC-0004", "A")},
    "always_bad": {"AEC-0003"},
    "bad_scenario": {"AEC-0005"},
    "bad_reference": {"ATEC-0004"},
}


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _review(out):
    with (out / "review.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of 30 instances (8 AT, 8 TE, 8 AEC, 6 ATEC) with transient faults and planted
    bad instances; yields (out, server, config, rc, stdout of the build)."""
    tmp = tmp_path_factory.mktemp("build")
    saved = os.environ.get("IRTPEER_TEST_KEY")
    os.environ["IRTPEER_TEST_KEY"] = TEST_KEY
    srv = DatasetFakeServer(**PLANTED).start()
    srv.add_fault("status", status=429, times=2, headers={"retry-after-ms": "5"})
    srv.add_fault("status", status=500, times=2)
    srv.add_fault("malformed", match="CTX[TE-0005|", times=1)  # its attribution reply is cut
    cfg = write_config(tmp, srv.url)
    out = tmp / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"])
    yield out, srv, cfg, rc, buf.getvalue()
    srv.stop()
    if saved is None:
        os.environ.pop("IRTPEER_TEST_KEY", None)
    else:
        os.environ["IRTPEER_TEST_KEY"] = saved


def test_build_runs_every_stage_and_writes_review_stats_manifest(built):
    out, _srv, _, rc, stdout = built
    assert rc == 0
    for name in ("calls.jsonl", "instances.jsonl", "review.csv", "review.html", "stats.csv"):
        assert (out / name).is_file(), name
    recs = {r["id"]: r for r in _jsonl(out / "instances.jsonl")}
    assert len(recs) == 30
    verified = [r for r in recs.values() if r["status"] == "verified"]
    assert len(verified) == 29
    for r in verified:  # the training structure: one negative per active dimension, no other
        assert set(r["negatives"]) == set(r["mask"]) and all(r["negatives"].values())
        assert r["reference"].startswith(f"REF for {r['id']}")
        assert r["attribution"]["required_dimensions"] == r["mask"]
        assert set(r["verdict"]) == {"V", "R", *(f"N_{d}" for d in r["mask"])}
    # the generator of each stage is drawn from the three, and all three are used
    used = {g for r in verified for g in r["generators"].values()}
    assert used == {"gen-a", "gen-b", "gen-c"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["command"] == "dataset build"
    c = m["counts"]
    assert c["retry_http_429"] == 2 and c["retry_http_500"] == 2
    assert c["reasks"] == 1 and c["judgments_ok_after_reask"] == 1
    assert c["calls_done"] == len(_jsonl(out / "calls.jsonl"))
    assert m["instances"] == {"verified": 29, "dropped": 1}
    assert "sk-irtpeer" not in (out / "manifest.json").read_text()
    assert set(m["tokens"]) == {"gen-a", "gen-b", "gen-c", "verifier-nano"}
    assert "29 verified, 1 dropped, 0 failed" in stdout


def test_planted_bad_instances_are_regenerated_or_dropped_never_exported(built):
    out, *_ = built
    recs = {r["id"]: r for r in _jsonl(out / "instances.jsonl")}
    # an attribution naming an inactive dimension: the scenario is brainstormed again (v2)
    for iid in ("AT-0001", "TE-0003"):
        r = recs[iid]
        assert r["status"] == "verified" and r["regenerations"] == {"attribution": 1}
        assert "|v2]" in r["context"]
    # a negative failing two dimensions: the verifier scores N2 = 0; only that negative is redone
    for iid, d in (("TE-0002", "E"), ("AEC-0004", "A")):
        r = recs[iid]
        assert r["status"] == "verified" and r["regenerations"] == {"verify_N": 1}
        assert "FAILS-TWO" not in r["negatives"][d]
    # an inconsistent scenario (verifier V) is brainstormed again; an unfaithful reference
    # (verifier R) is written again, and its negatives with it
    r = recs["AEC-0005"]
    assert r["status"] == "verified" and r["regenerations"] == {"verify_V": 1}
    assert "INCONSISTENT" not in r["context"] and "|v2]" in r["context"]
    assert [v["V"] for v in r["verifications"]] == [False, True]
    r = recs["ATEC-0004"]
    assert r["status"] == "verified" and r["regenerations"] == {"verify_R": 1}
    assert "FABRICATED" not in r["reference"] and "|v1]" in r["context"]
    assert r["verifications"][0] == {"V": True, "R": False, **{f"N_{d}": True for d in "ATEC"}}
    # always bad: dropped at the regeneration limit (2), with its reason
    bad = recs["AEC-0003"]
    assert bad["status"] == "dropped"
    assert "limit of 2 regenerations" in bad["reason"] and "N2" in bad["reason"]
    review = _review(out)
    ids = {r["instance_id"] for r in review}
    assert "AEC-0003" not in ids and len(ids) == 29
    text = (out / "review.csv").read_text() + (out / "review.html").read_text()
    assert not any(w in text for w in ("FAILS-TWO", "INCONSISTENT", "FABRICATED"))
    assert "CTX[AT-0001|AT|v1]" not in text and "CTX[AT-0001|AT|v2]" in text
    stats = {
        (r["statistic"], r["group"]): r["value"] for r in csv.DictReader((out / "stats.csv").open())
    }
    assert stats[("regenerations", "attribution")] == "2"
    assert stats[("regenerations", "verify_N")] == str(2 + 3)  # two plants + AEC-0003's 3 negatives
    assert stats[("regenerations", "verify_V")] == stats[("regenerations", "verify_R")] == "1"
    assert stats[("instances", "dropped")] == "1"


def test_statistics_match_the_instances(built):
    out, *_ = built
    recs = [r for r in _jsonl(out / "instances.jsonl") if r["status"] == "verified"]
    rows = list(csv.DictReader((out / "stats.csv").open()))
    stats = {(r["statistic"], r["group"]): r["value"] for r in rows}
    assert stats[("portion_verified", "AT")] == "8" and stats[("portion_verified", "AEC")] == "7"
    assert stats[("portion_planned", "ATEC")] == "6"
    fmt = {k: sum(r["task_format"] == k for r in recs) for k in ("selection", "generation")}
    assert {k: int(stats[("task_format", k)]) for k in fmt} == fmt
    assert abs(fmt["selection"] - fmt["generation"]) <= 4  # formats alternate within a portion
    ref_words = [len(r["reference"].split()) for r in recs]
    assert float(stats[("length_words_reference", "mean")]) == pytest.approx(
        sum(ref_words) / len(ref_words), abs=0.01
    )
    n_neg = sum(len(r["mask"]) for r in recs)
    assert int(stats[("length_words_negative", "n")]) == n_neg
    assert 0 < float(stats[("length_overlap_reference_negative", "histogram_overlap")]) <= 1
    assert 0.9 < float(stats[("verifier_pass_rate", "V")]) < 1.0
    assert 0.8 < float(stats[("verifier_pass_rate", "N")]) < 1.0
    card = {k: float(stats[("mask_cardinality_pct", k)]) for k in ("2", "3", "4")}
    assert card["2"] == pytest.approx(100 * 16 / 29, abs=0.1)


def test_review_page_is_self_contained_and_carries_every_instance(built):
    out, *_ = built
    html = (out / "review.html").read_text()
    assert not re.search(r"(src|href)=\"https?://", html)  # nothing loaded from the network
    data = json.loads(
        re.search(
            r'<script type="application/json" id="data">(.*?)</script>', html, re.DOTALL
        ).group(1)
    )
    assert [r["instance_id"] for r in data["rows"]] == [r["instance_id"] for r in _review(out)]
    assert set(data["dims"]) == {"A", "T", "E", "C"}


def test_rerun_sends_nothing_and_rewrites_the_same_files(built):
    out, srv, cfg, _, _ = built
    before = srv.count
    first = (out / "instances.jsonl").read_bytes()
    pristine = (out / "review.csv").read_bytes()
    rows = _review(out)  # a reviewer marks review.csv in place, then the build is rerun
    rows[0].update(accept="x", comment="kept, with a, comma")
    rows[1]["reject"] = "x"
    with (out / "review.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert run_cli(["dataset", "build", cfg, "--out", out, "--no-progress"]) == 0
    assert srv.count == before
    assert (out / "instances.jsonl").read_bytes() == first
    again = _review(out)
    assert again[0]["accept"] == "x" and again[0]["comment"] == "kept, with a, comma"
    assert again[1]["reject"] == "x" and not any(r["accept"] for r in again[1:])
    (out / "review.csv").write_bytes(pristine)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"].get("calls_done", 0) == 0 and m["counts"]["calls_cached"] > 300


def _reviewed(out, tmp_path):
    rows = _review(out)
    for i, r in enumerate(rows):
        r["accept"] = "x" if i % 7 else ""
        r["reject"] = "" if i % 7 else "yes"
    rows[1]["accept"], rows[1]["comment"] = "", "not sure yet"  # left unreviewed
    rows[2]["comment"] = "good, slightly long"
    p = tmp_path / "reviewed.csv"
    with p.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return p, rows


def test_accept_writes_training_file_that_lagdpo_validates(built, tmp_path, capsys):
    out, *_ = built
    p, rows = _reviewed(out, tmp_path)
    assert run_cli(["dataset", "accept", out, p]) == 0
    said = capsys.readouterr().out
    n_rej = sum(1 for r in rows if r["reject"])
    n_acc = sum(1 for r in rows if r["accept"])
    assert f"{n_acc} accepted, {n_rej} rejected, 1 unreviewed" in said
    train = _jsonl(out / "personaknob.jsonl")
    test = _jsonl(out / "personaknob_test.jsonl")
    assert len(train) + len(test) == n_acc and test
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in test} == {"test"}
    assert not {r["seed_scene"] for r in train} & {r["seed_scene"] for r in test}
    accepted = {r["instance_id"] for r in rows if r["accept"]}
    assert {r["id"] for r in train + test} == accepted
    by_id = {r["id"]: r for r in train + test}
    assert by_id[rows[2]["instance_id"]]["review_comment"] == "good, slightly long"
    for r in train:  # inactive dimensions have empty rejections
        for d in "ATEC":
            assert bool(r[f"reject_{d}"]) == (d in r["mask"])
    summary = json.loads((out / "review_summary.json").read_text())
    assert summary["human_pass_rate"] == round(n_acc / (n_acc + n_rej), 4)

    lagdpo_data = pytest.importorskip("lagdpo.data", reason="the lagdpo plug-in is not installed")
    from lagdpo.cli import main as lagdpo_main

    ds = lagdpo_data.load_personaknob(out / "personaknob.jsonl")
    assert len(ds) == len(train) and ds[0]["dim_mask"] == [d in ds[0]["mask"] for d in "ATEC"]
    assert lagdpo_main(["validate", str(out / "personaknob.jsonl")]) == 0
    assert f"{len(train)} records" in capsys.readouterr().out


def test_lagdpo_trains_a_step_on_the_built_file(built, tmp_path, tiny_chat_model):
    pytest.importorskip("trl", reason="lagdpo training needs trl")
    from lagdpo.cli import main as lagdpo_main

    out, *_ = built
    p, _ = _reviewed(out, tmp_path)
    assert run_cli(["dataset", "accept", out, p, "--test-fraction", "0"]) == 0
    assert not (out / "personaknob_test.jsonl").exists()
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "use_cpu: true\nbf16: false\nreport_to: none\nper_device_train_batch_size: 4\n"
        "learning_rate: 0.005\nlogging_steps: 1\nsave_strategy: 'no'\nseed: 0\n"
        "disable_tqdm: true\ndataloader_num_workers: 0\nmax_length: 96\ngradient_checkpointing: false\n"
    )
    run = tmp_path / "run"
    rc = lagdpo_main(
        [
            "train", "--method", "lagdpo", "--model", str(tiny_chat_model),
            "--data", str(out / "personaknob.jsonl"), "--output-dir", str(run),
            "--max-steps", "1", "--config", str(cfg),
        ]
    )  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader((run / "lambda_history.csv").open()))
    assert len(rows) == 4 and {r["dimension"] for r in rows} == set("ATEC")
    assert all(float(r["loss"]) > 0 for r in rows)


def _dom(path):
    """The page as a real browser renders it (headless Chromium runs the page's script)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("needs a Chromium browser (Debian: apt-get install chromium)")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=90, check=True).stdout


def test_review_page_renders_in_a_browser_and_shows_text_as_text(built, tmp_path):
    out, *_ = built
    dom = _dom(out / "review.html")
    assert len(re.findall(r'class="card ?"', dom)) == 29
    assert "0 of 29 reviewed" in dom and "CTX[AT-0001|AT|v2]" in dom

    from irtpeer.harness.dataset.review import REVIEW_COLUMNS, review_html

    evil = "<img src=x onerror=alert(1)></script><b>bold</b>"
    row = dict.fromkeys(REVIEW_COLUMNS, "")
    row.update(instance_id="X-0000", mask="A", prompt=evil, reject_A="neg", reference="ref")
    page = tmp_path / "evil.html"
    page.write_text(review_html(pd.DataFrame([row], columns=REVIEW_COLUMNS), {"A": "Anti"}))
    dom = _dom(page)
    assert len(re.findall(r'class="card ?"', dom)) == 1
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in dom
    assert "<b>bold</b>" not in dom
