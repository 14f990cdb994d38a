"""Embedding clustering of 100 responses per question: the seed's re-encoding loop vs encode-once.

    HF_HUB_OFFLINE=1 python bench/bench_clustering.py --data-dir DIR [--questions 8] [--samples 100]   (default DIR: $ALICE_DATA_DIR)

Responses are synthesized per HotpotQA question (offline copy) to look like a teacher's 100 samples: the gold
answer and three other answers, each phrased in several ways (bare answer, sentence, with a reason, restating
the question), so that some responses repeat, some paraphrase and some stand alone.

The seed (W2SG_pipeline/ours/new_weak_to_strong_cluster.py) encoded every remaining response and the head again
on each pass of its greedy loop; ``alice.clustering`` encodes each response once and runs the same greedy
procedure on the similarity matrix. Both use the same model (all-MiniLM-L6-v2) and threshold (0.9); the table
says whether their clusters agree. Writes bench/results/clustering.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alice.clustering import DEFAULT_EMBEDDING_MODEL, cluster_by_embedding  # noqa: E402

TEMPLATES = [
    "{a}",
    "{a}.",
    "The answer is {a}.",
    "The answer is {a}",
    "It is {a}.",
    "I believe the answer is {a}.",
    "{a}. This is based on what I know about the question.",
    "To answer \"{q}\", the answer is {a}.",
    "Let me think step by step. The question asks: {q} Considering the facts, the answer is {a}.",
    "Based on my knowledge, {a} is the correct answer, since it matches every part of the question.",
]


def synth_responses(row: dict, others: list[str], n: int, rng: random.Random) -> list[str]:
    """n samples: ~55% the gold answer, the rest spread over three distractors, in random phrasings."""
    answers = [row["answer"]] + others[:3]
    weights = [0.55, 0.2, 0.15, 0.1]
    out = []
    for _ in range(n):
        a = rng.choices(answers, weights)[0]
        out.append(rng.choice(TEMPLATES).format(a=a, q=row["question"]))
    return out


def seed_clustering(encode, responses: list[str], threshold: float):
    """The seed's loop: each pass encodes the remaining responses and the head, then compares."""
    from sklearn.metrics.pairwise import cosine_similarity

    clustered, temp, encoded = [], list(responses), 0
    while temp:
        head = temp[0]
        sim = cosine_similarity(encode(temp), encode([head]))
        encoded += len(temp) + 1
        similar = sim[:, 0] > threshold
        size = int(similar.sum())
        if size == 1:
            temp = temp[1:]
            continue
        clustered.append({"response": head, "size": size})
        temp = [t for t, s in zip(temp, similar) if not s]
    return clustered, encoded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL)
    ap.add_argument("--data-dir", default=os.environ.get("ALICE_DATA_DIR"),
                    help="a local data folder with hotpotqa/train.jsonl (default: $ALICE_DATA_DIR)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "clustering.json"))
    args = ap.parse_args()
    if not args.data_dir:
        ap.error("pass --data-dir DIR (a folder with hotpotqa/train.jsonl) or set ALICE_DATA_DIR")

    import torch
    from sentence_transformers import SentenceTransformer

    root = Path(args.data_dir)
    if not (root / "hotpotqa").is_dir() and (root / "data" / "hotpotqa").is_dir():
        root = root / "data"  # a folder holding data/ (like the offline copy), as --data-dir of the stages
    rows = [json.loads(line) for line in open(root / "hotpotqa" / "train.jsonl")]
    rng = random.Random(0)
    picked = rng.sample(rows, args.questions)
    model = SentenceTransformer(args.model, device="cuda" if torch.cuda.is_available() else "cpu")

    def encode(texts):
        return model.encode(texts, batch_size=128, show_progress_bar=False, convert_to_numpy=True)

    encode(["warm up"] * 8)
    table = []
    for row in picked:
        others = [r["answer"] for r in rng.sample(rows, 3)]
        responses = synth_responses(row, others, args.samples, rng)
        t0 = time.perf_counter()
        seed, seed_encoded = seed_clustering(encode, responses, args.threshold)
        t_seed = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = cluster_by_embedding(responses, encode(responses), args.threshold)
        t_once = time.perf_counter() - t0
        same = [{"response": c["response"], "size": c["size"]} for c in ours.clusters] == seed
        table.append(dict(id=row["id"], responses=len(responses), clusters=len(ours.clusters),
                          singletons=ours.singletons, seed_texts_encoded=seed_encoded, once_texts_encoded=len(responses),
                          seed_s=round(t_seed, 4), once_s=round(t_once, 4), speedup=round(t_seed / t_once, 1),
                          same_clusters=same))

    print(f"{'question':<18}{'clusters':>9}{'single':>7}{'enc seed':>9}{'enc once':>9}{'seed s':>9}{'once s':>9}{'x':>7}  same")
    for t in table:
        print(f"{t['id']:<18}{t['clusters']:>9}{t['singletons']:>7}{t['seed_texts_encoded']:>9}{t['once_texts_encoded']:>9}"
              f"{t['seed_s']:>9.3f}{t['once_s']:>9.3f}{t['speedup']:>7.1f}  {t['same_clusters']}")
    tot_seed, tot_once = sum(t["seed_s"] for t in table), sum(t["once_s"] for t in table)
    ratio = tot_seed / tot_once
    print(f"{'total':<18}{'':>9}{'':>7}{sum(t['seed_texts_encoded'] for t in table):>9}"
          f"{sum(t['once_texts_encoded'] for t in table):>9}{tot_seed:>9.3f}{tot_once:>9.3f}{ratio:>7.1f}")
    print(f"encode-once is {ratio:.1f}x faster; clusters identical on {sum(t['same_clusters'] for t in table)}/{len(table)} questions")

    result = dict(
        command=" ".join(["HF_HUB_OFFLINE=1 python bench/bench_clustering.py", *sys.argv[1:]]),
        model=args.model, threshold=args.threshold, samples=args.samples, questions=len(table),
        device=str(model.device), cpu_threads=torch.get_num_threads(), machine=platform.platform(),
        processor=platform.processor() or platform.machine(), torch=torch.__version__,
        load_average_1min=round(os.getloadavg()[0], 2),  # other work on the machine slows both columns
        total_seed_s=round(tot_seed, 3), total_once_s=round(tot_once, 3), speedup=round(ratio, 1),
        all_same_clusters=all(t["same_clusters"] for t in table), per_question=table,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
