"""``--seed-exact``: the seed's behaviour where this project deliberately differs in what is generated, kept or trained
on (docs/seed-differences.md, the switch column). Each stage holds its own rule; this module names them and reads
back, for the report, which outputs of a run were made with the switch (their records, ``alice.fresh``).

    cot/cot_generate_filter.py     the seed's lower-cased substring filter (``grading.cot_keeps``; ARC: the text after
                                   the first ``My choice is `` up to the next ``.``), not the project's grader
    cluster stage                  gsm8k/ARC: the seed's raw keys (the text after the first ``#### `` / ``My choice
                                   is ``) and its rule for unreadable answers (``clustering.cluster_by_seed_key``);
                                   hotpotqa/triviaqa: hkunlp/instructor-large with its instruction (one line when it
                                   cannot be loaded; never replaced by another embedder)
    final stage                    one sample per question, kept whatever its form (``alice_stages.first_kept``)
    ablations                      the same rules inside (a), (d) and (e) (``alice.ablations``)

Fixes of crashes and wrong paths stay (the ids, the cascade paths, atomic outputs). The training recipe is not
switched (docs/seed-differences.md says how it differs).
"""

from __future__ import annotations

from . import fresh
from .alice_stages import Setting


def record(s: Setting) -> dict[str, bool]:
    """Whether each existing output of this Alice run (and its teacher's CoT) was made with --seed-exact, by its record."""
    paths = [s.layout.cot_correct(s.model, s.teacher, s.data), s.clustered, s.uncertainty, s.zeroshot, s.train]
    return {str(p): bool(((fresh.read_meta(p) or {}).get("settings") or {}).get("seed_exact")) for p in paths if p.exists()}


def tag(made: dict | None) -> str:
    """`` [--seed-exact]`` when every output in ``made`` (``record``) was made with it; a warning when only some were."""
    values = set((made or {}).values())
    return " [--seed-exact]" if values == {True} else " [partly --seed-exact: see seed_exact]" if True in values else ""
