"""Evaluation summaries of one setting -> one table with PGR and 95% CIs, as text, JSON, markdown and a bar chart.

Rows: weak and strong (``base``), the untrained models (``naive``, when evaluated), original W2S with a qa / cot
teacher (and the cascade baseline when a mid-level is given), Alice, cascade Alice, and evaluated variants (ablations).

PGR (performance gap recovered) = (acc - weak) / (strong - weak). Its 95% CI is a bootstrap: paired over the
test questions when the three prediction files share their ids (they do when run on the same split), else
from independent binomial draws of the three accuracies.

``comparisons``: Alice minus original W2S (cot teacher), cascade Alice minus the cascade baseline and each variant
minus its ``versus`` (ablations: minus Alice): the accuracy difference over the test questions both prediction files
hold, with a paired bootstrap 95% CI. ``seed_exact``: which of the run's outputs were made with ``--seed-exact``.

``diagnostics``: the mechanism on the W2S part, against the ground truth (``alice.diagnostics``).
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

from . import fresh, methods, seed_exact
from .alice_stages import Setting
from .diagnostics import DIAG_METRICS, FOLLOWS, diagnostics
from .evaluate import load_correct, load_summary, wilson
from .jsonl import write_json
from .paths import Layout, eval_run_name

BOOTSTRAP = 2000


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    run: str | None  # None: cannot exist in this setting (e.g. cascade without --midlevel)
    w2s: bool  # a weak-to-strong method: gets a PGR
    note: str = ""
    paper: bool = True  # False: a variant (alice.methods), shown only once evaluated


def entries(model: str, teacher: str, student: str, midlevel: str | None = None) -> list[Entry]:
    """The rows of the report for one setting, in display order: each method's report rows (``alice.methods``)."""
    sizes = {"teacher": teacher, "student": student, "midlevel": midlevel}
    out = []
    for m in methods.METHODS.values():
        for r in m.report:
            label = r.label if midlevel or r.via != "midlevel" else r.label.replace(" (via {midlevel})", "")
            label = label.format(**{k: v or "" for k, v in sizes.items()})
            if r.via == "midlevel" and not midlevel:  # cannot exist in this setting
                out.append(Entry(r.key, label, None, m.pgr, "needs --midlevel"))
                continue
            otype, utype = (m.eval[1] if m.eval_type_flag == f else None for f in ("--original-wts-type", "--ours-wts-type"))
            run = eval_run_name(model, sizes[r.evaluated], m.eval[0], sizes[r.via] if r.via else None, otype, utype)
            out.append(Entry(r.key, label, run, m.pgr, paper=m.paper))
    return out


def _pgr(acc: float, weak: float, strong: float) -> float | None:
    return None if strong == weak else (acc - weak) / (strong - weak)


def _quantiles(xs: list[float]) -> list[float] | None:
    xs = sorted(x for x in xs if x is not None)
    if len(xs) < 10:
        return None
    return [xs[int(0.025 * (len(xs) - 1))], xs[int(0.975 * (len(xs) - 1))]]


def pgr_ci(acc: dict, weak: dict, strong: dict, c_acc=None, c_weak=None, c_strong=None, seed: int = 0):
    """(95% CI of PGR, method): paired bootstrap over shared question ids, else binomial bootstrap."""
    rng = random.Random(seed)
    if c_acc and c_weak and c_strong and set(c_acc) == set(c_weak) == set(c_strong):
        ids = sorted(c_acc)
        vals = []
        for _ in range(BOOTSTRAP):
            sample = [ids[rng.randrange(len(ids))] for _ in ids]
            a, w, s = (sum(c[i] for i in sample) / len(sample) for c in (c_acc, c_weak, c_strong))
            vals.append(_pgr(a, w, s))
        return _quantiles(vals), "paired bootstrap"

    def draw(s):
        n, p = s["n"], s["accuracy"]
        return sum(rng.random() < p for _ in range(n)) / n if n else p

    vals = [_pgr(draw(acc), draw(weak), draw(strong)) for _ in range(BOOTSTRAP // 4)]
    return _quantiles(vals), "binomial bootstrap"


# ---- paired difference of two methods on the test questions --------------------------------------------
COMPARISONS = (("alice", "original_cot"), ("alice_cascade", "original_cascade"))  # (method, baseline)


def paired_diff(c_a: dict, c_b: dict, seed: int = 0) -> dict | None:
    """Accuracy of ``a`` minus that of ``b`` over the question ids both hold (``{id: correct}`` each), with a 95%
    paired bootstrap CI (questions resampled with replacement); None when they share no id."""
    ids = sorted(set(c_a) & set(c_b))
    if not ids:
        return None
    d = [int(c_a[i]) - int(c_b[i]) for i in ids]
    n, rng = len(d), random.Random(seed)
    vals = [sum(rng.choices(d, k=n)) / n for _ in range(BOOTSTRAP)]
    return {"n": n, "diff": sum(d) / n, "ci95": _quantiles(vals), "ci_method": "paired bootstrap",
            "accuracy_a": sum(c_a[i] for i in ids) / n, "accuracy_b": sum(c_b[i] for i in ids) / n}


def comparisons(rows: list[dict], correct: dict) -> list[dict]:
    """One entry per ``COMPARISONS`` pair: its paired difference, or a ``note`` saying what it needs."""
    out, keys = [], {r["key"] for r in rows}
    for a, b in COMPARISONS + tuple(p for p in methods.versus() if p[0] in keys):
        ra, rb = _rows_of(rows, a, b)
        c = {"a": a, "b": b, "label": f"{ra['label']} - {rb['label']}"}
        if ra["missing"] or rb["missing"]:
            c["note"] = f"needs {' and '.join(r['label'] for r in (ra, rb) if r['missing'])}"
        elif correct.get(a) is None or correct.get(b) is None:
            c["note"] = "needs both prediction files"
        else:
            c.update(paired_diff(correct[a], correct[b]) or {"note": "no shared question ids"})
        out.append(c)
    return out


def build(layout: Layout, model: str, teacher: str, student: str, data: str, midlevel: str | None = None,
          data_dir: str | None = None) -> dict:
    """Collect the summaries of a setting: ``{"rows": [...], "comparisons": [...], "diagnostics": {...}, ...}``;
    missing summaries are rows with ``missing``. ``data_dir``: where the ground truth of the diagnostics is."""
    rows = []
    summaries, correct = {}, {}
    for e in entries(model, teacher, student, midlevel):
        row = {"key": e.key, "label": e.label, "run": e.run, "w2s": e.w2s}
        s = load_summary(layout.eval_summary(data, e.run)) if e.run else None
        if s is None and not e.paper:
            continue  # a variant beyond the paper's (an ablation) is a row once it is evaluated
        stale = e.run and s is not None and (fresh.stale_reason(layout.eval_summary(data, e.run))  # model retrained
                                            or fresh.stale_reason(layout.eval_predictions(data, e.run)))  # since
        if s is None:
            row.update(missing=True, note=e.note or "not evaluated")
        elif stale:
            row.update(missing=True, stale=stale, note=f"STALE, not shown: {stale}; rerun its evaluation.py "
                                                       f"command with --overwrite")
        else:
            summaries[e.key] = s
            # this root's predictions file; the path the summary recorded only when that is absent (a run packed on
            # another machine records where it was made)
            pred = layout.eval_predictions(data, e.run)
            correct[e.key] = load_correct(pred if Path(pred).exists() or not s.get("predictions") else s["predictions"])
            lo, hi = s.get("ci95") or wilson(s["correct"], s["n"])
            row.update(missing=False, accuracy=s["accuracy"], n=s["n"], correct=s["correct"], parsed=s.get("parsed"),
                       ci95=[lo, hi], model=s.get("model"), limit=(s.get("settings") or {}).get("limit"))
            if s.get("seed"):  # the seed's metric, to compare with the paper's numbers
                row.update(seed_accuracy=s["seed"]["accuracy"], seed_correct=s["seed"]["correct"],
                           seed_denominator=s["seed"]["denominator"])
        rows.append(row)
    weak, strong = summaries.get("weak"), summaries.get("strong")
    for row in rows:
        if not row["w2s"] or row["missing"]:
            continue
        if weak is None or strong is None:
            row["pgr_note"] = "needs weak and strong"
            continue
        row["pgr"] = _pgr(row["accuracy"], weak["accuracy"], strong["accuracy"])
        # the seed's metric counts parsed answers only: one that parsed none (a student writing \boxed{} where the
        # seed reads '####') has no seed accuracy to put in a PGR
        if all(x.get("seed_accuracy") is not None and x.get("seed_denominator")
               for x in (row, *_rows_of(rows, "weak", "strong"))):
            w, st = (x["seed_accuracy"] for x in _rows_of(rows, "weak", "strong"))
            row["seed_pgr"] = _pgr(row["seed_accuracy"], w, st)
        if row["pgr"] is None:
            row["pgr_note"] = "strong = weak"
            continue
        row["pgr_ci95"], row["pgr_ci_method"] = pgr_ci(
            summaries[row["key"]], weak, strong, correct.get(row["key"]), correct.get("weak"), correct.get("strong"))
    warnings = [f"{r['label']}: evaluation is stale ({r['stale']}): left out" for r in rows if r.get("stale")]
    if weak is not None and strong is not None and strong["accuracy"] <= weak["accuracy"]:
        warnings.append(f"strong ({strong['accuracy']:.3f}) is not above weak ({weak['accuracy']:.3f}): "
                        "PGR divides by a gap <= 0 and is not meaningful here")
    return {"family": model, "teacher": teacher, "student": student, "midlevel": midlevel, "data": data, "rows": rows,
            "comparisons": comparisons(rows, correct),
            "seed_exact": seed_exact.record(Setting(data, model, teacher, student, layout=layout)),
            "diagnostics": diagnostics(layout, model, teacher, student, data, midlevel, data_dir), "warnings": warnings}


def _rows_of(rows: list[dict], *keys: str) -> list[dict]:
    return [next(r for r in rows if r["key"] == k) for k in keys]


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def table_lines(rep: dict, markdown: bool = False) -> list[str]:
    head = ["method", "accuracy", "95% CI", "n", "PGR", "PGR 95% CI", "seed's metric", "seed's PGR"]
    body = []
    for r in rep["rows"]:
        if r["missing"]:
            body.append([r["label"], "missing", "", "", "", r["note"], "", ""])
            continue
        n = f"{r['n']}" + (f" (limit {r['limit']})" if r.get("limit") else "")
        pgr = f"{r['pgr']:.3f}" if r.get("pgr") is not None else ("" if not r["w2s"] else "-")
        seed = ("" if r.get("seed_accuracy") is None
                else "none parsed (0/0)" if not r.get("seed_denominator")  # the seed's parsed-only denominator is empty
                else f"{r['seed_accuracy']:.3f} ({r['seed_correct']}/{r['seed_denominator']})")
        seed_pgr = f"{r['seed_pgr']:.3f}" if r.get("seed_pgr") is not None else ""
        body.append([r["label"], f"{r['accuracy']:.3f}", _fmt_ci(r["ci95"]), n, pgr,
                     _fmt_ci(r.get("pgr_ci95")) or r.get("pgr_note", ""), seed, seed_pgr])
    if markdown:
        notes = ["", *[f"**Warning:** {w}" for w in rep.get("warnings", [])]] if rep.get("warnings") else []
    else:
        notes = [f"warning: {w}" for w in rep.get("warnings", [])]
    return _render(head, body, markdown) + notes


def _render(head: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(b) + " |" for b in body]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]


def comparison_lines(rep: dict, markdown: bool = False) -> list[str]:
    """Paired differences on the test questions (method - baseline)."""
    body = [[c["label"], f"{c['diff']:+.3f}", _fmt_ci(c["ci95"]), f"{c['n']}"] if "diff" in c
            else [c["label"], "missing", c["note"], ""] for c in rep.get("comparisons", [])]
    return _render(["difference in accuracy", "point", "95% CI (paired bootstrap)", "n (shared questions)"], body, markdown)


def _metric_cells(m: dict) -> list[str]:
    if m.get("missing"):
        return ["missing", "", "", m["note"]]
    acc = "-" if m["accuracy"] is None else f"{m['accuracy']:.3f}"
    return [acc, _fmt_ci(m["ci95"]), f"{m['correct']}/{m['n']}", m["of"]]


def diagnostics_lines(rep: dict, markdown: bool = False) -> list[str]:
    """The mechanism on the W2S part, graded against ground truth: one row per quantity of each Alice run."""
    d = rep.get("diagnostics") or {}
    body = []
    for h in d.get("hops", []):
        if h.get("missing"):
            body.append([h["label"], "stage files", "missing", "", "", h["note"]])
            continue
        c = h["clusters"]
        shares = " / ".join("-" if c[f"share_{k}"] is None else f"{c[f'share_{k}']:.3f}" for k in ("one", "several", "none"))
        body.append([h["label"], "clusters: one / several / none", shares, "",
                     f"{c['one']} / {c['several']} / {c['none']} of {c['n']}", f"questions of {h['subset']}"])
        body += [[h["label"], what, *_metric_cells(h[k])] for k, what, _ in DIAG_METRICS]
        f = h.get("final_follows") or {"missing": True, "note": "not computed"}
        if f.get("missing"):
            body.append([h["label"], "final answer follows", "missing", "", "", f["note"]])
        else:
            shares = " / ".join("-" if f[f"share_{k}"] is None else f"{f[f'share_{k}']:.3f}" for k, _ in FOLLOWS)
            body.append([h["label"], "final answer follows: " + " / ".join(w for _, w in FOLLOWS), shares, "",
                         " / ".join(str(f[k]) for k, _ in FOLLOWS) + f" of {f['n']}", f["of"]])
            kept = "-" if f["share_kept"] is None else f"{f['share_kept']:.3f}"
            body.append([h["label"], "several-cluster questions with a kept (well-formed) final answer", kept, "",
                         f"{f['kept']}/{f['several']}", "questions with several clusters"])
    for t, m in d.get("original_labels", {}).items():
        body.append([f"original W2S, {t} teacher", "teacher's labels", *_metric_cells(m)])
    head = ["run", "what (W2S part, against ground truth)", "accuracy", "95% CI", "correct/n", "denominator"]
    return _render(head, body, markdown)


def lines(rep: dict, markdown: bool = False) -> list[str]:
    """The whole report: the accuracy table, the paired differences and the diagnostics."""
    sub = (lambda t: ["", f"## {t}", ""]) if markdown else (lambda t: ["", t])
    return (table_lines(rep, markdown) + sub("Paired difference on the test questions") + comparison_lines(rep, markdown)
            + sub("Diagnostics of the mechanism on the W2S part (graded against ground truth)")
            + diagnostics_lines(rep, markdown))


def title(rep: dict) -> str:
    mid = f" (mid-level {rep['midlevel']})" if rep.get("midlevel") else ""
    return f"{rep['data']}: {rep['family']} {rep['teacher']} -> {rep['student']}{mid}" + seed_exact.tag(rep.get("seed_exact"))


def plot(rep: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rep["rows"] if not r["missing"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows) + 1), 4))
    if rows:
        xs = range(len(rows))
        acc = [r["accuracy"] for r in rows]
        err = [[a - r["ci95"][0] for a, r in zip(acc, rows)], [r["ci95"][1] - a for a, r in zip(acc, rows)]]
        colors = ["#bbbbbb" if not r["w2s"] else "#4c72b0" for r in rows]
        ax.bar(xs, acc, yerr=err, capsize=4, color=colors)
        ax.set_xticks(list(xs))
        # wrapped to the bar's width: an ablation's label is a sentence (methods.ABLATIONS)
        ax.set_xticklabels([textwrap.fill(r["label"], 20) for r in rows], fontsize=7, rotation=0)
        for r, x in zip(rows, xs):
            if r.get("pgr") is not None:
                ax.text(x, 0.02, f"PGR {r['pgr']:.2f}", ha="center", va="bottom", fontsize=7, color="white")
    else:
        ax.text(0.5, 0.5, "no evaluation summaries yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title(title(rep), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(layout: Layout, rep: dict) -> dict[str, str]:
    """Write JSON, markdown and PNG next to each other; returns their paths."""
    args = (rep["family"], rep["teacher"], rep["student"], rep["data"])
    paths = {ext: layout.report(*args, suffix) for ext, suffix in (("json", ".json"), ("md", ".md"), ("png", ".png"))}
    write_json(paths["json"], rep)
    paths["md"].write_text(f"# {title(rep)}\n\n" + "\n".join(lines(rep, markdown=True)) + "\n"
                           "\nPGR = (acc - weak) / (strong - weak); 95% CIs: Wilson for accuracy, bootstrap for PGR.\n"
                           "accuracy: the project's graders over every question; seed's metric: the paper's code's "
                           "grading (lenient matches; gsm8k and CoT-trained ARC runs count parsed responses only), "
                           "correct/denominator, for comparison with the paper's numbers.\n"
                           "Paired difference: method minus baseline accuracy over the test questions both were "
                           "evaluated on; 95% CI from resampling those questions.\n"
                           "Diagnostics: the Alice stage files and original W2S labels graded with the project's "
                           "grader against the train split's ground truth; 95% CIs: Wilson.\n")
    plot(rep, paths["png"])
    return {k: str(v) for k, v in paths.items()}
