"""Alice: proactive weak-to-strong generalization (arXiv 2504.07316), as a small research library.

Every fact the stage scripts share lives once in this package:

- ``models``     one ``ModelFamily`` spec per family: sizes -> hub ids, end-of-turn token, TP / batch hints
- ``registry``   model family + size -> hub id (or any hub id / local folder)
- ``datasets``   one module per dataset (loader rules, splits, grader, prompts, seed metric, version) + the registry
- ``data``       loading (Hub or a local folder), the paper's splits, ids
- ``paths``      every file under ``data/`` and ``model_outputs/``, named as the paper names them
- ``artifacts``  which command makes which file (hints, SFT jobs, evaluation targets, the pipeline's plan)
- ``options``    typed options the stages take, and the defaults (sampling per stage, N, threshold) written once
- ``errors``     ``AliceError``, the base of every error a user can cause
- ``prompts``    the chat messages of every prompt of the paper, by dataset name
- ``grading``    grading by dataset name; the final stage's well-formedness rule
- ``generation`` one text generator (vLLM or hf), the engine pool, resumable and data-parallel generation
- ``jsonl``      atomic, resumable JSONL files
- ``cli``        the flags the stage scripts share
"""

__version__ = "0.1.0"
