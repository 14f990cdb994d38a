"""Alice: proactive weak-to-strong generalization (arXiv 2504.07316), as a small research library.

Every fact the stage scripts share lives once in this package:

- ``registry``   model family + size -> hub id (or any hub id / local folder)
- ``data``       one registered ``DatasetSpec`` per dataset; loading (Hub or a local folder), the paper's splits, ids
- ``paths``      every file under ``data/`` and ``model_outputs/``, named as the paper names them
- ``artifacts``  which command makes which file (hints, SFT jobs, evaluation targets, the pipeline's plan)
- ``options``    typed options the stages take, and the defaults (sampling per stage, N, threshold) written once
- ``errors``     ``AliceError``, the base of every error a user can cause
- ``prompts``    every prompt template of the paper
- ``grading``    answer extraction and one grader per dataset
- ``jsonl``      atomic, resumable JSONL files
- ``cli``        the flags the stage scripts share
"""

__version__ = "0.1.0"
