"""Calibrate the cosine threshold of Alice's embedding clustering (hotpotqa / triviaqa) on real sampled answers.

    # 1) sample: N answers per question with the project's Generator and the Alice cluster stage's prompt and
    #    sampling (the bare question, temperature 0.9, top_p 0.95), on the W2S part of the train split
    HF_HUB_OFFLINE=1 python bench/calibrate_threshold.py sample --model Qwen/Qwen2.5-Coder-0.5B-Instruct \\
        --data hotpotqa triviaqa --limit 150 --num-samples 16 --max-new-tokens 256 --backend vllm --chunk 300 \\
        --out results/threshold_samples.jsonl
    # 2) calibrate: embed, compare "cosine > t" with answer equivalence, pick t
    HF_HUB_OFFLINE=1 python bench/calibrate_threshold.py calibrate results/threshold_samples.jsonl

Answer equivalence (the reference the threshold is scored against), from the grader's normalisation
(``grading.normalize_text``: lower case, no punctuation or articles): two samples give the same answer when
both are graded correct against the question's gold (they name the gold answer), or when the normalised text
of one is contained, as whole words, in the other's (the grader's containment rule), taken transitively; a
wrong answer is thus only equal to the same wrong answer. A sample with no text is its own class.

For each threshold t on a grid, over all sample pairs of a question pooled across questions: precision,
recall and F1 of "cosine > t" against "same answer"; and the adjusted Rand index between the project's greedy
clustering at t (``clustering.cluster_by_embedding``; singletons as their own clusters) and the equivalence
classes, averaged over questions. The best threshold maximises pooled pair F1. Writes
results/threshold_calibration.json (command, commit, n, model, table, best).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GRID = [round(x, 2) for x in np.arange(0.5, 0.981, 0.02)] + [0.985, 0.99, 0.995]  # fine steps where MiniLM's best lies


# ----------------------------------------------------------------------------------------------------
# sample
# ----------------------------------------------------------------------------------------------------

def sample(args) -> Path:
    """Sample ``--num-samples`` answers for the first ``--limit`` questions of each ``--data``. Written a few questions
    at a time (``--chunk``): a killed run keeps what it wrote and a rerun with the same ``--out`` continues."""
    import time

    from alice import alice_stages, data, prompts
    from alice.generation import Generator, Sampling

    rows = [dict(r, data=name) for name in args.data
            for r in data.load_subset(name, "w2s_part", args.data_dir)[: args.limit]]
    sampling = Sampling(temperature=alice_stages.TEMPERATURE, top_p=alice_stages.TOP_P,
                        max_new_tokens=args.max_new_tokens, n=args.num_samples, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        with open(out, encoding="utf-8") as f:
            done = {json.loads(line)["id"] for line in f if line.strip()}
    todo = [r for r in rows if r["id"] not in done]
    print(f"{len(rows) - len(todo)}/{len(rows)} questions already sampled in {out}", flush=True)
    t0, n_tok = time.perf_counter(), 0
    with Generator(args.model, backend=args.backend, batch_size=args.batch_size,
                   gpu_memory_utilization=args.gpu_memory_utilization) as gen:
        for c in range(0, len(todo), args.chunk):
            part = todo[c : c + args.chunk]
            t1 = time.perf_counter()
            texts = gen.generate([prompts.question_messages(r["question"]) for r in part], sampling, desc="sampling")
            with open(out, "a", encoding="utf-8") as f:
                for r, samples in zip(part, texts):
                    f.write(json.dumps({"id": r["id"], "data": r["data"], "question": r["question"], "gold": r["gold"],
                                        "samples": samples, "model": args.model, "backend": gen.backend,
                                        "max_new_tokens": args.max_new_tokens}) + "\n")
            k = sum(len(gen.tokenizer().encode(t)) for s in texts for t in s)
            n_tok += k
            print(f"[sample] {len(rows) - len(todo) + c + len(part)}/{len(rows)} questions, {time.perf_counter() - t0:.0f}s "
                  f"(chunk {time.perf_counter() - t1:.0f}s, {k} tokens)", flush=True)
    print(f"wrote -> {out} ({time.perf_counter() - t0:.0f}s)")
    return out


# ----------------------------------------------------------------------------------------------------
# calibrate
# ----------------------------------------------------------------------------------------------------

def answer_classes(data: str, samples: list[str], gold) -> list[int]:
    """Equivalence class of each sample's answer (see the module docstring)."""
    from alice import grading

    norm = [grading.normalize_text(s) for s in samples]
    correct = [bool(n) and grading.grade(data, s, gold).correct for s, n in zip(samples, norm)]
    parent = list(range(len(samples)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(samples)):
        for j in range(i + 1, len(samples)):
            if not norm[i] or not norm[j]:
                continue
            same = (correct[i] and correct[j]) or grading._contains(norm[i], norm[j]) or grading._contains(norm[j], norm[i])
            if same:
                parent[find(j)] = find(i)
    roots = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(samples))]


def adjusted_rand(a: list[int], b: list[int]) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie); 1.0 when both are trivial and equal."""
    from math import comb

    n = len(a)
    if n < 2:
        return 1.0
    table: dict = {}
    for x, y in zip(a, b):
        table[(x, y)] = table.get((x, y), 0) + 1
    sa, sb = {}, {}
    for x, y in zip(a, b):
        sa[x] = sa.get(x, 0) + 1
        sb[y] = sb.get(y, 0) + 1
    index = sum(comb(v, 2) for v in table.values())
    ea, eb, total = sum(comb(v, 2) for v in sa.values()), sum(comb(v, 2) for v in sb.values()), comb(n, 2)
    expected = ea * eb / total
    top = (ea + eb) / 2
    if top == expected:  # both labelings all-singletons or all-one-cluster
        return 1.0 if index == expected else 0.0
    return (index - expected) / (top - expected)


def clustering_labels(responses: list[str], emb: np.ndarray, t: float) -> list[int]:
    """The project's greedy clustering at ``t`` as labels; each singleton its own cluster."""
    from alice.clustering import cluster_by_embedding

    c = cluster_by_embedding(responses, emb, t)
    labels = [-1] * len(responses)
    for k, cl in enumerate(c.clusters):
        for m in cl["members"]:
            labels[m] = k
    nxt = len(c.clusters)
    for i, v in enumerate(labels):
        if v < 0:
            labels[i], nxt = nxt, nxt + 1
    return labels


def score(questions: list[dict], grid=GRID) -> list[dict]:
    """One row per threshold: pooled pair precision/recall/F1 and mean ARI (``questions``: data, samples, gold,
    classes, emb)."""
    from alice.clustering import cosine_matrix

    sims, same = [], []
    for q in questions:
        n = len(q["samples"])
        iu = np.triu_indices(n, 1)
        sims.append(cosine_matrix(q["emb"])[iu])
        c = np.asarray(q["classes"])
        same.append((c[:, None] == c[None, :])[iu])
    sims, same = np.concatenate(sims), np.concatenate(same)
    table = []
    for t in grid:
        pred = sims > t
        tp, fp, fn = int((pred & same).sum()), int((pred & ~same).sum()), int((~pred & same).sum())
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        ari = float(np.mean([adjusted_rand(clustering_labels(q["samples"], q["emb"], t), q["classes"])
                             for q in questions]))
        table.append({"threshold": t, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4),
                      "ari": round(ari, 4), "tp": tp, "fp": fp, "fn": fn})
    return table



def calibrate(args) -> dict:
    from alice.clustering import DEFAULT_THRESHOLD, Embedder
    from alice.fresh import git_commit

    questions = []
    for path in args.samples:
        if not Path(path).is_file():
            sys.exit(f"error: {path} does not exist: write it with `{Path(__file__).name} sample ... --out {path}`")
        with open(path, encoding="utf-8") as f:
            questions += [json.loads(line) for line in f if line.strip()]
    if not questions:
        sys.exit(f"error: no questions in {', '.join(args.samples)}: run `{Path(__file__).name} sample` first")
    embedder = Embedder(args.embedding_model, instruction=args.embedding_instruction)
    for q in questions:
        # the responses exactly as the project's QA clustering sees them (the whole sampled text)
        q["emb"] = embedder.encode(q["question"], q["samples"])
        q["classes"] = answer_classes(q["data"], q["samples"], q["gold"])
    result = {"command": getattr(args, "command_line", " ".join(sys.argv)), "commit": git_commit(),
              "embedding_model": args.embedding_model, "instruction": embedder.use_instruction,
              "current_default": DEFAULT_THRESHOLD, "per_dataset": {}}
    datasets = sorted({q["data"] for q in questions})
    for name in datasets + (["all"] if len(datasets) > 1 else []):
        qs = [q for q in questions if name == "all" or q["data"] == name]
        table = score(qs)
        best = max(table, key=lambda r: (r["f1"], r["ari"]))
        pairs = sum(len(q["samples"]) * (len(q["samples"]) - 1) // 2 for q in qs)
        same = sum(r["tp"] + r["fn"] for r in table[:1])
        result["per_dataset"][name] = {
            "questions": len(qs), "samples": sum(len(q["samples"]) for q in qs), "pairs": pairs, "same_answer_pairs": same,
            "sampler": sorted({q.get("model", "?") for q in qs}),
            "max_new_tokens": sorted({q.get("max_new_tokens") for q in qs if q.get("max_new_tokens")}),
            "table": table, "best": best,
            "at_current_default": next((r for r in table if abs(r["threshold"] - DEFAULT_THRESHOLD) < 1e-9), None)}
        print(f"\n{name}: {len(qs)} questions, {pairs} pairs, {same} same-answer pairs ({args.embedding_model})")
        print(f"{'t':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'ARI':>6}")
        for r in table:
            mark = "  <- best F1" if r is best else ""
            print(f"{r['threshold']:5.3f} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['ari']:6.3f}{mark}")
    key = "all" if "all" in result["per_dataset"] else datasets[0]
    result["n_questions"] = result["per_dataset"][key]["questions"]
    result["best_threshold"] = result["per_dataset"][key]["best"]["threshold"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nbest threshold ({key}): {result['best_threshold']} -> {out}")
    return result


def build_parser():
    from alice.clustering import DEFAULT_EMBEDDING_MODEL
    from alice.options import DEFAULT_GPU_MEMORY_UTILIZATION

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="sample answers per question (the Alice cluster stage's prompt and sampling)")
    s.add_argument("--model", required=True, help="sampler: hub id or local folder (the trained teacher in the pipeline)")
    s.add_argument("--data", required=True, nargs="+", choices=("hotpotqa", "triviaqa"),
                   help="one or both; --limit questions of each")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--limit", type=int, default=40)
    s.add_argument("--num-samples", type=int, default=8)
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.add_argument("--backend", default="auto", choices=("auto", "vllm", "hf"))
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--gpu-memory-utilization", type=float, default=DEFAULT_GPU_MEMORY_UTILIZATION,
                   help="vLLM on a GPU: the card's share")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--chunk", type=int, default=4, help="questions per generate call, appended to --out after each")
    s.add_argument("--out", required=True)
    c = sub.add_parser("calibrate", help="score thresholds on sampled answers")
    c.add_argument("samples", nargs="+", help="JSONL files written by `sample`")
    c.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL)
    c.add_argument("--embedding-instruction", default="auto", choices=("auto", "on", "off"))
    c.add_argument("--out", default=str(REPO / "results" / "threshold_calibration.json"))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["bench/calibrate_threshold.py", *(sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return sample(args) if args.cmd == "sample" else calibrate(args)


if __name__ == "__main__":
    main()
