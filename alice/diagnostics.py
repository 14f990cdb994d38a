"""Diagnostics of Alice's mechanism on the W2S part (shown by ``alice.report``).

Graded against the ground truth of the train split with the dataset's grader (``alice.grading``): from the Alice
stage files (``alice.alice_stages``) the accuracy of the teacher's largest-cluster answer, of the student's zero-shot
answer and of its proactive final answer, the shares of questions with one cluster, several and none, whose answer the
final answer takes (``final_follows``: the teacher's, its own zero-shot one, both, neither) and the accuracy of the
original W2S teachers' labels.
"""

from __future__ import annotations

import dataclasses

from . import data as data_mod
from . import fresh, grading
from .alice_stages import Setting
from .evaluate import wilson
from .jsonl import JsonlError, read_jsonl
from .paths import Layout

DIAG_METRICS = (  # (key, what, denominator)
    ("teacher_cluster", "teacher's largest-cluster answer",
     "every question the cluster stage was given; a question without a cluster counts as wrong"),
    ("teacher_cluster_several", "teacher's largest-cluster answer, several clusters",
     "questions with several clusters (those the student answers)"),
    ("student_zeroshot", "student's zero-shot answer", "questions of the zero-shot file (several clusters)"),
    ("student_final", "student's proactive final answer", "'new' rows of the training file (several clusters)"),
    ("alice_labels", "Alice's training labels", "rows of the training file ('original' + 'new')"),
)


def _metric(data: str, pairs: list[tuple], of: str) -> dict:
    """Accuracy of (response, ground-truth row) pairs with the dataset's grader; a None response is wrong."""
    k = sum(r is not None and grading.grade(data, r, q["gold"], q["question"]).correct for r, q in pairs)
    n = len(pairs)
    return {"correct": k, "n": n, "accuracy": k / n if n else None, "ci95": list(wilson(k, n)), "of": of}


def _missing(path) -> dict:
    return {"missing": True, "note": f"missing: {path}"}


def _read(path, fields: tuple[str, ...]) -> list[dict] | None:
    """Rows of a stage file, each cut to ``fields``; None when the file is absent."""
    return read_jsonl(path, fields=fields) if path.exists() else None


def hop_diagnostics(data: str, s: Setting, train: list[dict], key: str, label: str) -> dict:
    """The diagnostics of one Alice run (``s``: its files), its questions taken from the loaded train split."""
    out = {"key": key, "label": label, "cluster_file": str(s.clustered)}
    clustered = _read(s.clustered, ("id", "clusters", "final_response"))
    if clustered is None:
        return dict(out, **_missing(s.clustered))
    meta = fresh.read_meta(s.clustered)
    limit = ((meta or {}).get("settings") or {}).get("limit")
    gold = {q["id"]: q for q in dataclasses.replace(s, limit=limit).questions(train)}
    cl = {r["id"]: r for r in clustered if r.get("id") in gold}
    count = {i: len(cl[i].get("clusters") or []) if i in cl else 0 for i in gold}
    n, one, several = len(gold), [i for i in gold if count[i] == 1], [i for i in gold if count[i] > 1]
    out.update(subset=s.subset, limit=limit if meta else "unknown (no record of the cluster stage): whole subset",
               n_questions=n, not_in_split=len(clustered) - len(cl))
    out["clusters"] = {"n": n, "one": len(one), "several": len(several), "none": n - len(one) - len(several)}
    out["clusters"].update({f"share_{k}": out["clusters"][k] / n if n else None for k in ("one", "several", "none")})
    of = {k: d for k, _, d in DIAG_METRICS}
    out["teacher_cluster"] = _metric(data, [(cl.get(i, {}).get("final_response"), q) for i, q in gold.items()],
                                     of["teacher_cluster"])
    out["teacher_cluster_several"] = _metric(data, [(cl[i].get("final_response"), gold[i]) for i in several],
                                             of["teacher_cluster_several"])
    read = {}
    for k, path, field, kind in (("student_zeroshot", s.zeroshot, "zero_shot_student_response", None),
                                 ("student_final", s.train, "answer", "new"), ("alice_labels", s.train, "answer", None)):
        rows = read[k] = _read(path, ("id", field, "label"))
        out[k] = _missing(path) if rows is None else _metric(
            data, [(r.get(field), gold[r["id"]]) for r in rows if r.get("id") in gold and kind in (None, r.get("label"))],
            of[k])
    out["final_follows"] = final_follows(data, gold, cl, read["student_zeroshot"], read["student_final"], several)
    return out


FOLLOWS = (("teacher", "teacher only"), ("zeroshot", "own zero-shot only"),
           ("both", "both"), ("neither", "neither"))


def final_follows(data: str, gold: dict, clustered: dict, zeroshot: list[dict] | None, train: list[dict] | None,
                  several: list[str]) -> dict:
    """Whose answer the student's proactive final answer takes, on the 'new' rows: the teacher's largest-cluster answer,
    its own zero-shot answer, both (they agree) or neither (final answers compared as the clusters compare them:
    the dataset's extracted answer); and how many of the several-cluster questions kept a final answer (the final
    stage drops a question whose answers were never well-formed)."""
    if data_mod.spec(data).uses_embeddings:
        return {"missing": True, "note": f"{data} answers are free text, clustered by embeddings: no answer to compare"}
    if zeroshot is None or train is None:
        return {"missing": True, "note": "needs the zero-shot and training files"}
    own = {r["id"]: r.get("zero_shot_student_response") for r in zeroshot}
    new = [r for r in train if r.get("label") == "new" and r.get("id") in gold and r["id"] in own and r["id"] in clustered]
    key = lambda text, i: grading.extract_final_answer(data, text, gold[i]["question"]) if text else None  # noqa: E731
    count = dict.fromkeys((k for k, _ in FOLLOWS), 0)
    for r in new:
        final = key(r.get("answer"), r["id"])
        t = final is not None and final == key(clustered[r["id"]].get("final_response"), r["id"])
        z = final is not None and final == key(own[r["id"]], r["id"])
        count["both" if t and z else "teacher" if t else "zeroshot" if z else "neither"] += 1
    n = len(new)
    return {"n": n, **count, **{f"share_{k}": count[k] / n if n else None for k, _ in FOLLOWS},
            "several": len(several), "kept": n, "share_kept": n / len(several) if several else None,
            "of": "'new' rows of the training file; kept: of the several-cluster questions"}


def diagnostics(layout: Layout, model: str, teacher: str, student: str, data: str, midlevel: str | None = None,
                data_dir: str | None = None) -> dict:
    """Diagnostics of every Alice run of the setting (single-turn; with ``midlevel`` the cascade's two hops) and the
    accuracy of the original W2S labels (qa, cot teachers), against the ground truth of the train split."""
    def setting(t, st, method="singleturn"):
        return Setting(data, model, t, st, method=method, midlevel=midlevel, layout=layout, data_dir=data_dir)

    hops = [("alice", f"Alice ({teacher} -> {student})", setting(teacher, student))]
    if midlevel:
        hops += [("cascade_hop1", f"cascade hop 1 ({teacher} -> {midlevel}; trains on the first half)",
                  setting(teacher, midlevel)),
                 ("cascade_hop2", f"cascade hop 2 ({midlevel} -> {student})", setting(teacher, student, "cascade"))]
    labels = {t: layout.original_labels(model, teacher, data, t) for t in ("qa", "cot")}
    out = {"hops": [], "original_labels": {}}
    if not any(s.clustered.exists() for _, _, s in hops) and not any(p.exists() for p in labels.values()):
        out["note"] = "no Alice stage files or original W2S labels yet"
    else:
        try:
            train = data_mod.load_train(data, data_dir)
        except data_mod.DataError as e:
            out["note"] = f"ground truth unavailable: {e}"
    if "note" in out:
        out["hops"] = [{"key": k, "label": lab, "missing": True, "note": out["note"]} for k, lab, _ in hops]
        return out
    gold = {r["id"]: r for r in train}
    for key, label, s in hops:
        try:
            out["hops"].append(hop_diagnostics(data, s, train, key, label))
        except JsonlError as e:
            out["hops"].append({"key": key, "label": label, "missing": True, "note": str(e)})
    for t, path in labels.items():
        try:
            rows = _read(path, ("id", "answer"))
        except JsonlError as e:
            out["original_labels"][t] = {"missing": True, "note": str(e)}
            continue
        out["original_labels"][t] = _missing(path) if rows is None else _metric(
            data, [(r.get("answer"), gold[r["id"]]) for r in rows if r.get("id") in gold], "rows of the labels file")
    return out
