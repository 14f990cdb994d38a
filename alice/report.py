"""Evaluation summaries of one setting -> one table with PGR and 95% CIs, as text, JSON, markdown and a bar chart.

Rows: weak (the teacher trained on ground truth, ``base``), strong (the student trained on ground truth),
the untrained models (``naive``, when evaluated), original W2S with a qa / cot teacher (and the cascade
baseline when a mid-level is given), Alice and cascade Alice.

PGR (performance gap recovered) = (acc - weak) / (strong - weak). Its 95% CI is a bootstrap: paired over the
test questions when the three prediction files share their ids (they do when run on the same split), else
from independent binomial draws of the three accuracies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


def entries(model: str, teacher: str, student: str, midlevel: str | None = None) -> list[Entry]:
    """The rows of the report for one setting, in display order."""
    def run(method, t, o=None, a=None):
        return eval_run_name(model, student, method, t, o, a)

    need_mid = "needs --midlevel"
    return [
        Entry("naive_weak", f"naive weak ({teacher}, untrained)", eval_run_name(model, teacher, "naive"), False),
        Entry("naive_strong", f"naive strong ({student}, untrained)", eval_run_name(model, student, "naive"), False),
        Entry("weak", f"weak ({teacher} on ground truth)", eval_run_name(model, teacher, "base"), False),
        Entry("strong", f"strong ({student} on ground truth)", eval_run_name(model, student, "base"), False),
        Entry("original_qa", "original W2S, qa teacher", run("original-wts", teacher, o="qa"), True),
        Entry("original_cot", "original W2S, cot teacher", run("original-wts", teacher, o="cot"), True),
        Entry("original_cascade", f"original W2S cascade (via {midlevel})" if midlevel else "original W2S cascade",
              run("original-wts", midlevel, o="cascade") if midlevel else None, True, "" if midlevel else need_mid),
        Entry("alice", "Alice", run("ours-wts", teacher, a="singleturn"), True),
        Entry("alice_cascade", f"cascade Alice (via {midlevel})" if midlevel else "cascade Alice",
              run("ours-wts", midlevel, a="cascade") if midlevel else None, True, "" if midlevel else need_mid),
    ]


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


def build(layout: Layout, model: str, teacher: str, student: str, data: str, midlevel: str | None = None) -> dict:
    """Collect the summaries of a setting: ``{"rows": [...], ...}``; missing ones are rows with ``missing``."""
    rows = []
    summaries, correct = {}, {}
    for e in entries(model, teacher, student, midlevel):
        row = {"key": e.key, "label": e.label, "run": e.run, "w2s": e.w2s}
        s = load_summary(layout.eval_summary(data, e.run)) if e.run else None
        if s is None:
            row.update(missing=True, note=e.note or "not evaluated")
        else:
            summaries[e.key] = s
            correct[e.key] = load_correct(s.get("predictions") or layout.eval_predictions(data, e.run))
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
        if all(x.get("seed_accuracy") is not None for x in (row, *_rows_of(rows, "weak", "strong"))):
            w, st = (x["seed_accuracy"] for x in _rows_of(rows, "weak", "strong"))
            row["seed_pgr"] = _pgr(row["seed_accuracy"], w, st)
        if row["pgr"] is None:
            row["pgr_note"] = "strong = weak"
            continue
        row["pgr_ci95"], row["pgr_ci_method"] = pgr_ci(
            summaries[row["key"]], weak, strong, correct.get(row["key"]), correct.get("weak"), correct.get("strong"))
    warnings = []
    if weak is not None and strong is not None and strong["accuracy"] <= weak["accuracy"]:
        warnings.append(f"strong ({strong['accuracy']:.3f}) is not above weak ({weak['accuracy']:.3f}): "
                        "PGR divides by a gap <= 0 and is not meaningful here")
    return {"family": model, "teacher": teacher, "student": student, "midlevel": midlevel, "data": data, "rows": rows,
            "warnings": warnings}


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
        seed = (f"{r['seed_accuracy']:.3f} ({r['seed_correct']}/{r['seed_denominator']})"
                if r.get("seed_accuracy") is not None else "")
        seed_pgr = f"{r['seed_pgr']:.3f}" if r.get("seed_pgr") is not None else ""
        body.append([r["label"], f"{r['accuracy']:.3f}", _fmt_ci(r["ci95"]), n, pgr,
                     _fmt_ci(r.get("pgr_ci95")) or r.get("pgr_note", ""), seed, seed_pgr])
    if markdown:
        notes = ["", *[f"**Warning:** {w}" for w in rep.get("warnings", [])]] if rep.get("warnings") else []
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(b) + " |" for b in body] + notes
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    notes = [f"warning: {w}" for w in rep.get("warnings", [])]
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body] + notes


def title(rep: dict) -> str:
    mid = f" (mid-level {rep['midlevel']})" if rep.get("midlevel") else ""
    return f"{rep['data']}: {rep['family']} {rep['teacher']} -> {rep['student']}{mid}"


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
        ax.set_xticklabels([r["label"].replace(" (", "\n(") for r in rows], fontsize=7, rotation=0)
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
    paths["md"].write_text(f"# {title(rep)}\n\n" + "\n".join(table_lines(rep, markdown=True)) + "\n"
                           "\nPGR = (acc - weak) / (strong - weak); 95% CIs: Wilson for accuracy, bootstrap for PGR.\n"
                           "accuracy: the project's graders over every question; seed's metric: the paper's code's "
                           "grading (lenient matches; gsm8k and CoT-trained ARC runs count parsed responses only), "
                           "correct/denominator, for comparison with the paper's numbers.\n")
    plot(rep, paths["png"])
    return {k: str(v) for k, v in paths.items()}
