"""report.py: summaries -> table with PGR and CIs, JSON, markdown and a PNG; missing rows are shown as missing."""

import json
import shutil
from pathlib import Path

import pytest

from alice import diagnostics, report
from alice.data import load_test
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
    # a student whose answers the seed's metric parses none of: no seed's PGR (not one computed from 0/0)
    put_seed(eval_run_name("qwen2.5", "7B", "ours-wts", "1.5B", ours_wts_type="singleturn"), 14, 0, 0)
    alice = next(r for r in report.build(L, "qwen2.5", "1.5B", "7B", "gsm8k")["rows"] if r["key"] == "alice")
    assert alice["seed_denominator"] == 0 and alice.get("seed_pgr") is None and alice["pgr"] == pytest.approx(0.75)


# ---- paired difference Alice - original W2S (cot) ------------------------------------------------------------

def test_paired_diff_identical_is_zero():
    c = {f"q{i}": i % 3 == 0 for i in range(30)}
    d = report.paired_diff(c, dict(c))
    assert (d["n"], d["diff"], d["ci95"]) == (30, 0.0, [0.0, 0.0])


def test_paired_diff_k_more_right_and_pairing():
    base = {f"q{i}": i < 10 for i in range(40)}
    better = {f"q{i}": i < 16 for i in range(40)}  # right on the same 10 and on 6 more
    d = report.paired_diff(better, base)
    lo, hi = d["ci95"]
    assert d["diff"] == pytest.approx(6 / 40) and 0 < lo < 6 / 40 < hi < 0.35
    assert (d["accuracy_a"], d["accuracy_b"]) == (16 / 40, 10 / 40)
    # as many right, on other questions: difference 0, but a paired CI on both sides of it
    other = {f"q{i}": 10 <= i < 20 for i in range(40)}
    d = report.paired_diff(other, base)
    assert d["diff"] == 0 and d["ci95"][0] < 0 < d["ci95"][1]
    # only the shared ids count
    d = report.paired_diff({"q0": True, "x": True}, {"q0": False, "y": False})
    assert (d["n"], d["diff"]) == (1, 1.0)
    assert report.paired_diff({"a": True}, {"b": True}) is None


def test_report_compares_alice_with_original_cot(tmp_path, capsys):
    L = Layout(tmp_path)
    put(L, eval_run_name("qwen2.5", "7B", "original-wts", "1.5B", original_wts_type="cot"), 10)
    put(L, eval_run_name("qwen2.5", "7B", "ours-wts", "1.5B", ours_wts_type="singleturn"), 14)
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B",
                           "--root", str(tmp_path)])
    c = {x["a"]: x for x in rep["comparisons"]}
    assert c["alice"]["b"] == "original_cot" and c["alice"]["n"] == 20
    assert c["alice"]["diff"] == pytest.approx(0.2) and c["alice"]["ci95"][0] <= 0.2 <= c["alice"]["ci95"][1]
    assert "diff" not in c["alice_cascade"] and "needs" in c["alice_cascade"]["note"]
    out = " ".join(capsys.readouterr().out.split())
    assert "Alice - original W2S, cot teacher +0.200" in out
    saved = json.load(open(L.report("qwen2.5", "1.5B", "7B", "gsm8k", ".json")))
    assert saved["comparisons"][0]["diff"] == pytest.approx(0.2)
    assert "| Alice - original W2S, cot teacher | +0.200 |" in open(L.report("qwen2.5", "1.5B", "7B", "gsm8k", ".md")).read()


# ---- diagnostics of the mechanism on the W2S part --------------------------------------------------------------

def gsm8k_data(folder, n=20):
    """A local gsm8k train (and test) split of ``n`` questions; question i's answer is i (W2S part: the second half)."""
    (folder / "gsm8k").mkdir(parents=True)
    for split in ("train", "test"):
        write_jsonl(folder / "gsm8k" / f"{split}.jsonl",
                    [{"question": f"q{i}: what is {i} + 0?", "answer": f"{i} + 0 = {i}\n#### {i}"} for i in range(n)])
    return str(folder)


def qid(i):
    return f"gsm8k-train-{i:05d}"


def write_stage_files(L, teacher="1.5B", student="7B", limit=None):
    """Alice single-turn files of 10 W2S questions (ids 10-19, answer i), as the stages write them:
    10-15 one cluster (the teacher right on 10-13), 16-18 several (right on 16 only), 19 none (no row).
    Student zero-shot right on 17, 18; its final answers right on 16, 17, 18."""
    from alice import fresh

    def cluster(i, answers):
        cl = [{"response": f"so #### {a}", "size": 3 - k, "members": []} for k, a in enumerate(answers)]
        return {"id": qid(i), "question": f"q{i}", "sampled_responses": [], "clusters": cl, "final_response": cl[0]["response"]}

    teacher_answer = {10: 10, 11: 11, 12: 12, 13: 13, 14: 99, 15: 98, 16: 16, 17: 97, 18: 96}
    rows = [cluster(i, [teacher_answer[i]]) for i in range(10, 16)] + [cluster(i, [teacher_answer[i], 1]) for i in (16, 17, 18)]
    clustered = L.sampled_clustered("qwen2.5", teacher, "gsm8k")
    write_jsonl(clustered, rows)
    fresh.record(clustered, {"stage": "cluster", "limit": limit})
    write_jsonl(L.zeroshot("qwen2.5", teacher, student, "gsm8k"),
                [{"id": qid(i), "question": f"q{i}", "zero_shot_student_response": f"#### {a}"}
                 for i, a in ((16, 0), (17, 17), (18, 18))])
    original = [{"id": qid(i), "question": f"q{i}", "answer": f"so #### {teacher_answer[i]}", "label": "original"}
                for i in range(10, 16)]
    new = [{"id": qid(i), "question": f"q{i}", "answer": f"\\boxed{{{i}}}", "label": "new"} for i in (16, 17, 18)]
    write_jsonl(L.alice_train("qwen2.5", teacher, student, "gsm8k"), original + new)


def acc(m):
    return m["correct"], m["n"]


def test_diagnostics_against_ground_truth(tmp_path, capsys):
    from alice.evaluate import wilson

    L, data = Layout(tmp_path / "run"), gsm8k_data(tmp_path / "data")
    write_stage_files(L)
    write_jsonl(L.original_labels("qwen2.5", "1.5B", "gsm8k", "qa"),  # right on 8 of 10
                [{"id": qid(i), "question": f"q{i}", "answer": f"#### {i if i < 18 else 0}"} for i in range(10, 20)])
    rep = report_cli.main(["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B",
                           "--root", str(L.root), "--data-dir", data])
    d = rep["diagnostics"]
    h = d["hops"][0]
    assert h["key"] == "alice" and h["n_questions"] == 10 and h["not_in_split"] == 0
    c = h["clusters"]
    assert (c["one"], c["several"], c["none"]) == (6, 3, 1)
    assert (c["share_one"], c["share_several"], c["share_none"]) == (0.6, 0.3, 0.1)
    assert acc(h["teacher_cluster"]) == (5, 10)  # 10-13 and 16; 19 (no cluster) counts as wrong
    assert h["teacher_cluster"]["ci95"] == list(wilson(5, 10))
    assert acc(h["teacher_cluster_several"]) == (1, 3)
    assert acc(h["student_zeroshot"]) == (2, 3)
    assert acc(h["student_final"]) == (3, 3)
    assert acc(h["alice_labels"]) == (7, 9)
    assert acc(d["original_labels"]["qa"]) == (8, 10) and d["original_labels"]["cot"]["missing"]
    out = " ".join(capsys.readouterr().out.split())
    assert "clusters: one / several / none 0.600 / 0.300 / 0.100" in out
    assert "student's proactive final answer" in out and "3/3" in out and "8/10" in out
    md = open(L.report("qwen2.5", "1.5B", "7B", "gsm8k", ".md")).read()
    assert "## Diagnostics" in md and "| 0.500 |" in md
    saved = json.load(open(L.report("qwen2.5", "1.5B", "7B", "gsm8k", ".json")))
    assert saved["diagnostics"]["hops"][0]["student_zeroshot"]["correct"] == 2
    # whose answer the final answer takes: 16 the teacher's (its zero-shot said 0), 17 and 18 its own zero-shot's
    f = h["final_follows"]
    assert (f["teacher"], f["zeroshot"], f["both"], f["neither"], f["kept"], f["several"]) == (1, 2, 0, 0, 3, 3)
    assert "final answer follows: teacher only / own zero-shot only / both / neither 0.333 / 0.667 / 0.000 / 0.000" in out
    # zero-shot agrees with the teacher on 16 (both), 17's final answer is neither's, 18 was dropped (never well-formed)
    write_jsonl(L.zeroshot("qwen2.5", "1.5B", "7B", "gsm8k"),
                [{"id": qid(i), "question": f"q{i}", "zero_shot_student_response": f"#### {a}"} for i, a in ((16, 16), (17, 17), (18, 18))])
    write_jsonl(L.alice_train("qwen2.5", "1.5B", "7B", "gsm8k"),
                [{"id": qid(i), "question": f"q{i}", "answer": f"so #### {a}", "label": "new"} for i, a in ((16, 16), (17, 55))])
    f = report.diagnostics(L, "qwen2.5", "1.5B", "7B", "gsm8k", data_dir=data)["hops"][0]["final_follows"]
    assert (f["teacher"], f["zeroshot"], f["both"], f["neither"], f["kept"], f["several"]) == (0, 0, 1, 1, 2, 3)
    assert f["share_kept"] == pytest.approx(2 / 3)
    # free-text answers (clustered by embeddings) have no extracted answer to compare: said, not guessed
    assert "embeddings" in diagnostics.final_follows("hotpotqa", {}, {}, [], [], [])["note"]


def test_diagnostics_use_the_cluster_stages_limit(tmp_path):
    """--limit 8 on the stages: the questions are ids 10-17 (18 is then not in the split's first 8)."""
    L, data = Layout(tmp_path / "run"), gsm8k_data(tmp_path / "data")
    write_stage_files(L, limit=8)
    h = report.diagnostics(L, "qwen2.5", "1.5B", "7B", "gsm8k", data_dir=data)["hops"][0]
    assert h["limit"] == 8 and h["n_questions"] == 8 and h["not_in_split"] == 1
    assert (h["clusters"]["one"], h["clusters"]["several"], h["clusters"]["none"]) == (6, 2, 0)
    assert acc(h["teacher_cluster"]) == (5, 8) and acc(h["student_zeroshot"]) == (1, 2)


def test_diagnostics_say_missing_never_crash(tmp_path, capsys):
    L, data = Layout(tmp_path / "run"), gsm8k_data(tmp_path / "data")
    args = ["--model", "qwen2.5", "--data", "gsm8k", "--teacher", "1.5B", "--student", "7B", "--midlevel", "3B",
            "--root", str(L.root)]
    rep = report_cli.main(args)  # nothing at all
    assert all(h["missing"] for h in rep["diagnostics"]["hops"]) and len(rep["diagnostics"]["hops"]) == 3
    assert "no Alice stage files" in rep["diagnostics"]["note"]
    write_stage_files(L)
    L.zeroshot("qwen2.5", "1.5B", "7B", "gsm8k").unlink()
    L.alice_train("qwen2.5", "1.5B", "7B", "gsm8k").unlink()
    rep = report_cli.main(args + ["--data-dir", data])
    hops = {h["key"]: h for h in rep["diagnostics"]["hops"]}
    assert acc(hops["alice"]["teacher_cluster"]) == (5, 10)
    assert hops["alice"]["student_zeroshot"]["missing"] and hops["alice"]["student_final"]["missing"]
    assert hops["cascade_hop1"]["teacher_cluster"]["correct"] == 5  # the same sampled file: the teacher's
    assert hops["cascade_hop1"]["student_final"]["missing"] and hops["cascade_hop2"]["missing"]
    assert "missing: " in capsys.readouterr().out
    # ground truth that cannot be loaded: said, not raised
    empty = tmp_path / "empty"
    empty.mkdir()
    rep = report.build(L, "qwen2.5", "1.5B", "7B", "gsm8k", data_dir=str(empty))
    assert rep["diagnostics"]["note"].startswith("ground truth unavailable") and rep["diagnostics"]["hops"][0]["missing"]
    report.write(L, rep)


def test_results_file_from_a_packed_gpu_run(tmp_path):
    """bench/oneoff/real_results_json.py: a tarball as gpu_real_results.sh packs it -> results JSON/MD/PNG with provenance."""
    import tarfile

    run_root = tmp_path / "run"
    L = Layout(run_root)
    data_dir = gsm8k_data(tmp_path / "data")
    test = load_test("gsm8k", data_dir)

    def put_answers(run, k, stale=0):  # the first k answers right; `stale` right ones stored as wrong (older grader)
        preds = [{"id": r["id"], "question": r["question"], "gold": r["gold"],
                  "response": f"So it is {r['gold'] if i < k else -1}.\n#### {r['gold'] if i < k else -1}",
                  "correct": i < k - stale, "parsed": True} for i, r in enumerate(test)]
        write_jsonl(L.eval_predictions("gsm8k", run), preds)
        write_json(L.eval_summary("gsm8k", run), dict(summarize(preds), run=run, predictions=str(
            L.eval_predictions("gsm8k", run)), settings={"limit": None}))

    put_answers(eval_run_name("qwen2.5-coder", "0.5B", "base"), 8)
    put_answers(eval_run_name("qwen2.5-coder", "1.5B", "base"), 16)
    put_answers(eval_run_name("qwen2.5-coder", "1.5B", "ours-wts", "0.5B", ours_wts_type="singleturn"), 12, stale=2)
    put_answers(eval_run_name("qwen2.5-coder", "1.5B", "original-wts", "0.5B", original_wts_type="cot"), 10)
    for name, text in (("command.txt", "python -m alice.pipeline --model qwen2.5-coder --data gsm8k --teacher 0.5B"),
                       ("commit.txt", "abc123"), ("device.txt", "NVIDIA H200"), ("start", "100"), ("end", "1300"),
                       ("rc", "0"), ("pipeline.log", "[ 1/3] base 0.5B: running (log: x)\n[ 1/3] base 0.5B: ok in 51s\n"
                                                     "[ 2/3] eval weak 0.5B: FAILED (exit 1) after 7s; see x\n"
                                                     "[ 3/3] report: running (log: y)")):
        (run_root / name).write_text(text + "\n")
    tarball = tmp_path / "real_gsm8k.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        for p in run_root.iterdir():
            tf.add(p, arcname=p.name)
    shutil.rmtree(run_root)  # as on the GPU machine: the paths the summaries recorded do not exist here
    mod = load_script("bench/oneoff/real_results_json.py")
    out = tmp_path / "results"
    rep = mod.main([str(tarball), "--out-dir", str(out), "--data-dir", data_dir])
    saved = json.load(open(out / "gsm8k_qwen2.5-coder_0.5B_to_1.5B.json"))  # the size's ".5B" is kept in the name
    graded_with = saved["provenance"].pop("graded_with_commit")
    assert graded_with is None or len(graded_with) == 40
    # the stored responses were graded again: the 2 answers an older grader missed count now
    alice_run = eval_run_name("qwen2.5-coder", "1.5B", "ours-wts", "0.5B", ours_wts_type="singleturn")
    assert saved["provenance"] == {"command": "python -m alice.pipeline --model qwen2.5-coder --data gsm8k --teacher 0.5B",
                                   "commit": "abc123", "device": "NVIDIA H200", "exit_code": "0", "wall_s": 1200,
                                   "finished": True, "source": "real_gsm8k.tar.gz",
                                   "steps": {"base 0.5B": {"status": "ok", "s": 51},
                                             "eval weak 0.5B": {"status": "FAILED", "s": 7},
                                             "report": {"status": "not finished", "s": None}},
                                   "failed_steps": ["eval weak 0.5B", "report"], "trainings": {},
                                   "regraded_accuracy_changed": {alice_run: [0.5, 0.6]}}
    alice = next(r for r in saved["rows"] if r["key"] == "alice")
    assert alice["accuracy"] == pytest.approx(0.6) and alice["pgr"] == pytest.approx(0.5) and rep["data"] == "gsm8k"
    diff = next(c for c in saved["comparisons"] if c["b"] == "original_cot")  # from the packed prediction files
    assert diff["n"] == 20 and diff["diff"] == pytest.approx(0.1)
    assert (out / "gsm8k_qwen2.5-coder_0.5B_to_1.5B.md").is_file() and (out / "gsm8k_qwen2.5-coder_0.5B_to_1.5B.png").is_file()
    # the setting is read off the recorded command: a cascade's mid-level too (its rows need it)
    cascade = ("python -m alice.pipeline --model custom --data hotpotqa --teacher HuggingFaceTB/SmolLM2-135M-Instruct "
               "--midlevel Qwen/Qwen2.5-Coder-0.5B-Instruct --student Qwen/Qwen2.5-Coder-1.5B-Instruct --paper")
    assert mod.setting_of(cascade) == {"model": "custom", "teacher": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                       "midlevel": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                                       "student": "Qwen/Qwen2.5-Coder-1.5B-Instruct"}
    assert mod.setting_of("python -m alice.pipeline --no-such-flag") == {}
    # what the packed files cannot say (a run resumed by a second launch) is recorded when given
    mod.main([str(tarball), "--out-dir", str(out), "--data-dir", data_dir, "--note", "resumed once"])
    saved = json.load(open(out / "gsm8k_qwen2.5-coder_0.5B_to_1.5B.json"))
    assert saved["provenance"]["note"] == "resumed once"
    # files are named under the run's root, not under the folder the pack happened to be extracted to
    named = {"cluster_file": "/tmp/tmpab12/data/ours/gsm8k/x.jsonl", "notes": ["missing: /tmp/tmpab12/data/y.jsonl"],
             "data_dir": "/tmp/tmpab123/gsm8k"}
    assert mod.rootless(named, Path("/tmp/tmpab12")) == {"cluster_file": "<run root>/data/ours/gsm8k/x.jsonl",
                                                         "notes": ["missing: <run root>/data/y.jsonl"],
                                                         "data_dir": "/tmp/tmpab123/gsm8k"}


def test_final_answer_format_counts_bare_and_boxed_answers(tmp_path):
    """bench/oneoff/final_answer_format.py: bare '#### N' answers (no worked solution) and \\boxed answers without the
    '####' line, in Alice's training rows and in each model's test answers, with the accuracy of each group."""
    mod = load_script("bench/oneoff/final_answer_format.py")
    worked = "Each sandwich needs 3 slices of bread, so 5 sandwiches need 3*5=<<3*5=15>>15 slices.\n#### 15"
    assert mod.bare("#### 15") and mod.bare("  #### 15\n") and not mod.bare(worked)
    assert mod.boxed_without_marker("so it takes \\(\\boxed{8}\\) minutes") and not mod.boxed_without_marker(worked)
    write_jsonl(tmp_path / "data" / "ours" / "gsm8k" / "m_0.5B_to_1.5B_gsm8k.jsonl",
                [{"id": "a", "answer": "#### 3", "label": "new"}, {"id": "b", "answer": worked, "label": "new"},
                 {"id": "c", "answer": "#### 4", "label": "original"},
                 {"id": "d", "answer": "Each sandwich needs 3 slices of bread for a total of 3*5=<<3*5=15>>15 slices of "
                                       "bread\n#### 15", "label": "new"}])
    write_jsonl(tmp_path / "model_outputs" / "eval" / "gsm8k" / "run.jsonl",
                [{"response": "#### 3", "correct": True}, {"response": "#### 5", "correct": False},
                 {"response": worked, "correct": True}, {"response": "it is \\boxed{2}", "correct": False}])
    res = mod.analyse(tmp_path)
    new = res["training_new_rows"]["m_0.5B_to_1.5B_gsm8k.jsonl"]
    assert new["bare"] == {"n": 1, "of": 3, "share": 0.3333} and new["copies_example"]["n"] == 1  # the prompt's example
    t = res["test_answers"]["run"]
    # the short \boxed answer is bare too (no worked solution before it)
    assert (t["bare"], t["accuracy_bare"], t["accuracy_not_bare"], t["boxed_without_marker"]) == (3, 0.3333, 1.0, 1)
