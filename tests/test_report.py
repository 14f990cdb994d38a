"""report.py: summaries -> table with PGR and CIs, JSON, markdown and a PNG; missing rows are shown as missing."""

import json

import pytest

from alice import report
from alice.evaluate import summarize
from alice.jsonl import write_json, write_jsonl
from alice.paths import Layout, eval_run_name
from alice.testing import load_script

report_cli = load_script("report.py")


def put(L, run, k, n=20, data="gsm8k"):
    """A summary + predictions for ``run`` with the first ``k`` of ``n`` questions correct."""
    preds = [{"id": f"q{i}", "correct": i < k, "parsed": True} for i in range(n)]
    pred_path = L.eval_predictions(data, run)
    write_jsonl(pred_path, preds)
    s = summarize(preds)
    s.update(model=f"/models/{run}", predictions=str(pred_path), settings={"limit": None})
    write_json(L.eval_summary(data, run), s)


def test_pgr_and_missing_rows(tmp_path, capsys):
    L = Layout(tmp_path)
    put(L, eval_run_name("qwen2.5", "1.5B", "base"), 8)  # weak 0.40
    put(L, eval_run_name("qwen2.5", "7B", "base"), 16)  # strong 0.80
    put(L, eval_run_name("qwen2.5", "7B", "original-wts", "1.5B", original_wts_type="qa"), 10)  # PGR 0.25
    put(L, eval_run_name("qwen2.5", "7B", "ours-wts", "1.5B", ours_wts_type="singleturn"), 14)  # PGR 0.75
    put(L, eval_run_name("qwen2.5", "7B", "naive"), 12)
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--root", str(tmp_path)])
    rows = {r["key"]: r for r in rep["rows"]}
    assert rows["original_qa"]["pgr"] == pytest.approx(0.25) and rows["alice"]["pgr"] == pytest.approx(0.75)
    lo, hi = rows["alice"]["pgr_ci95"]
    assert lo < 0.75 < hi and rows["alice"]["pgr_ci_method"] == "paired bootstrap"
    assert rows["original_cot"]["missing"] and rows["naive_weak"]["missing"] and not rows["naive_strong"]["missing"]
    assert rows["alice_cascade"]["note"] == "needs --midlevel"
    assert "pgr" not in rows["strong"]
    out = capsys.readouterr().out
    assert "original W2S, cot teacher" in out and "missing" in out and "0.250" in out

    base = L.report("qwen2.5", "1.5B", "7B", "gsm8k", "")
    saved = json.load(open(f"{base}.json"))
    assert saved["rows"] == json.loads(json.dumps(rep["rows"]))
    md = open(f"{base}.md").read()
    assert md.count("\n|") >= 10 and "| Alice | 0.700 |" in md
    assert open(f"{base}.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_cascade_rows_with_midlevel_and_no_weak(tmp_path):
    L = Layout(tmp_path)
    put(L, eval_run_name("qwen2.5", "7B", "ours-wts", "3B", ours_wts_type="cascade"), 5)
    rep = report.build(L, "qwen2.5", "1.5B", "7B", "gsm8k", midlevel="3B")
    rows = {r["key"]: r for r in rep["rows"]}
    assert rows["alice_cascade"]["accuracy"] == 0.25 and rows["alice_cascade"]["pgr_note"] == "needs weak and strong"
    assert "(via 3B)" in rows["alice_cascade"]["label"]
    report.write(L, rep)  # a table with gaps still renders
    assert L.report("qwen2.5", "1.5B", "7B", "gsm8k", ".png").exists()


def test_binomial_ci_without_predictions():
    ci, how = report.pgr_ci({"n": 100, "accuracy": 0.6}, {"n": 100, "accuracy": 0.4}, {"n": 100, "accuracy": 0.8})
    assert how == "binomial bootstrap" and ci[0] < 0.5 < ci[1]


def test_nothing_evaluated_is_not_an_error(tmp_path, capsys):
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--root", str(tmp_path)])
    assert all(r["missing"] for r in rep["rows"])


def test_warns_when_strong_is_not_above_weak(tmp_path, capsys):
    L = Layout(tmp_path)
    put(L, eval_run_name("qwen2.5", "1.5B", "base"), 12)  # weak 0.60
    put(L, eval_run_name("qwen2.5", "7B", "base"), 8)  # strong 0.40: PGR's denominator is negative
    put(L, eval_run_name("qwen2.5", "7B", "ours-wts", "1.5B", ours_wts_type="singleturn"), 10)
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--root", str(tmp_path)])
    assert len(rep["warnings"]) == 1 and "not meaningful" in rep["warnings"][0]
    assert "warning: strong (0.400) is not above weak (0.600)" in capsys.readouterr().out
    assert "**Warning:**" in open(f"{L.report('qwen2.5', '1.5B', '7B', 'gsm8k', '')}.md").read()
    # the usual case has no warning
    put(L, eval_run_name("qwen2.5", "7B", "base"), 16)
    assert report.build(L, "qwen2.5", "1.5B", "7B", "gsm8k")["warnings"] == []


def test_report_shows_the_seeds_metric(tmp_path, capsys):
    L = Layout(tmp_path)

    def put_seed(run, k, seed_k, seed_den, n=20):
        preds = [{"id": f"q{i}", "correct": i < k, "parsed": True, "seed_correct": i < seed_k,
                  "seed_counted": i < seed_den} for i in range(n)]
        write_jsonl(L.eval_predictions("gsm8k", run), preds)
        s = summarize(preds)
        s.update(model=f"/m/{run}", predictions=str(L.eval_predictions("gsm8k", run)), settings={"limit": None})
        write_json(L.eval_summary("gsm8k", run), s)

    put_seed(eval_run_name("qwen2.5", "1.5B", "base"), 8, 8, 16)  # seed 0.50
    put_seed(eval_run_name("qwen2.5", "7B", "base"), 16, 15, 20)  # seed 0.75
    put_seed(eval_run_name("qwen2.5", "7B", "ours-wts", "1.5B", ours_wts_type="singleturn"), 14, 10, 16)  # seed 0.625
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B",
                           "--root", str(tmp_path)])
    rows = {r["key"]: r for r in rep["rows"]}
    assert (rows["alice"]["seed_correct"], rows["alice"]["seed_denominator"]) == (10, 16)
    assert rows["alice"]["pgr"] == pytest.approx(0.75) and rows["alice"]["seed_pgr"] == pytest.approx(0.5)
    out = capsys.readouterr().out
    assert "seed's metric" in out and "0.625 (10/16)" in out and "0.500" in out
