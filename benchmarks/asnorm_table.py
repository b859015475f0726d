"""The shipped fusion searched with a cohort (AS-norm), measured held out through the service's pipeline.

    PYTHONPATH=. python3 benchmarks/asnorm_table.py [--workers 2] [--write-table] [--json OUT]

The model is the one a collection gets (``vision.fusion.fused_model(DLIB_FACERES, ...)``, embedded
as ``benchmarks/fusion_table.py`` does, from the same cache); the scoring is the service's
(``vision.cohort``: top ``COHORT_TOP`` cosines, Similarity ``60 + 4 z``). K = 50 and a cohort of any
images were chosen by ``benchmarks/open_set_lfw.py`` on each half's quarters: the best setting on
both halves for the fusion (FNIR at FPIR 0.01 11.3% and 10.8% there).

LFW's people are dealt into ``fusion_lfw.split_halves`` (seed 0); each half is scored with a cohort
of ``COHORT`` images drawn at random from the *other* half, so no cohort face is of anyone compared:

1. the threshold table: every pair within a half (about 43 M non-mated, 120 k mated; pairs across
   the halves would put one side's person in the cohort), counted on the AS-norm Similarity, with
   the fusion's transfer margin (``--write-table``: ``vision/dlib_faceres_asnorm_lfw_thresholds.json``);
2. per half, raw fused Similarity against AS-norm on the same pairs and searches: TAR at FMR 1e-4
   and 1e-5 (thresholds set on the pairs measured: a comparison, not a prediction), and open-set
   identification (``protocols.identification``): FNIR at FPIR 0.01 and 0.001;
3. the gallery-aware default of each scoring (the table's own, as a collection of the half's
   gallery size gets it): observed FPIR and FNIR. For AS-norm the table is in-sample here (measured
   on these pairs), for raw Similarity it is the shipped one (also LFW);
4. how the table depends on the cohort: FMR at the table's thresholds for FMR 1e-4 and 1e-5 with
   cohorts of 800 to 6,400 faces (the table holds for cohorts of ``COHORT`` faces or more);
5. the service's search re-ranks the raw index's top N candidates (``COHORT_CANDIDATES``): FNIR and
   FPIR with only the raw top N rescored, against all of the gallery;
6. what AS-norm adds to a search, on the service's own objects (``CollectionIndex``, ``Cohort``): the
   half's 6,600 templates indexed, 300 probes, raw search of 200 against rescoring them; cold (each
   gallery face's statistics computed when first met) and warm (kept, as the service keeps them).

With a warm embedding cache it takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402
from fusion_lfw import split_halves, subset  # noqa: E402
from fusion_table import shipped_fusion  # noqa: E402

from faceledger.eval import metrics, protocols  # noqa: E402
from faceledger.eval.datasets import identity_folders  # noqa: E402
from faceledger.eval.embeddings import EmbeddedSet  # noqa: E402
from faceledger.index import CollectionIndex  # noqa: E402
from faceledger.service.cohorts import Cohort  # noqa: E402
from faceledger.service.search_limits import TARGET_FPIR, fpir_threshold  # noqa: E402
from faceledger.vision.calibration import ThresholdTable, safe_search_threshold  # noqa: E402
from faceledger.vision.cohort import (  # noqa: E402
    COHORT_CANDIDATES,
    DLIB_FACERES_COHORT_TABLE,
    SCORING,
    CohortNorm,
    normalised,
    scored_similarity,
    similarity_of_z,
)
from faceledger.vision.fusion import (  # noqa: E402
    DLIB_FACERES_TABLE,
    DLIB_FACERES_TRANSFER_MARGIN,
)

COHORT = 3200
COHORT_SIZES = (800, 1600, 3200, 6400)
FMRS = (1e-4, 1e-5)
FPIRS = (0.01, 0.001)
DEPTHS = (50, COHORT_CANDIDATES, 400)


def draw(pool: np.ndarray, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(pool, size, replace=False))


def scored_set(norm: CohortNorm, templates: np.ndarray, half: EmbeddedSet) -> EmbeddedSet:
    rows = norm.scored_rows(templates)
    return EmbeddedSet(half.paths, rows, rows, half.found, half.similarity)


def tar(counts: protocols.PairCounts, target: float) -> dict[str, float]:
    threshold = counts.threshold_at_fmr(target)
    return {"target_fmr": target, "threshold": threshold, "tar": 1 - counts.fnmr(threshold).value}


def open_set(search: metrics.OpenSetResult, default: float | None = None) -> dict[str, object]:
    out: dict[str, object] = {"rank1": search.rank1_hit_rate}
    for target in FPIRS:
        threshold = search.threshold_at_fpir(target)
        out[f"fnir_at_fpir_{target:g}"] = search.fnir(threshold).as_dict()
    if default is not None:
        out["default"] = default
        out["default_fpir"] = search.fpir(default).as_dict()
        out["default_fnir"] = search.fnir(default).as_dict()
    return out


def depth_limited(depth: int):
    """AS-norm Similarity where only the raw ``depth`` most similar gallery rows are rescored (the
    service's search); the others score -inf."""

    def score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cos = a[:, :-2] @ b[:, :-2].T
        z = similarity_of_z(normalised(cos, a[:, -2:], b[:, -2:]))
        if depth < cos.shape[1]:
            cut = np.partition(np.nan_to_num(cos, nan=-2.0), cos.shape[1] - depth, axis=1)[:, -depth:].min(axis=1)
            z = np.where(cos >= cut[:, None], z, -np.inf)
        return np.where(np.isnan(z), -np.inf, z)

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-table", action="store_true", help="write the shipped AS-norm table")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    lfw = require("lfw")

    options = shipped_fusion(args.workers)
    model = options.model
    images = identity_folders(lfw)
    embedded = options.embed(lfw, images.paths)
    templates = embedded.templates(True)
    labels = np.asarray(images.identities)
    halves = split_halves(list(labels), args.seed)
    raw_table = ThresholdTable.load(DLIB_FACERES_TABLE)  # the service's model: this one with its own flip
    print(f"model {model.version}; {SCORING}, cohort {COHORT} any images from the other half")

    pooled = protocols.PairCounts()
    figures: dict[str, object] = {"version": model.version, "scoring": SCORING, "cohort": COHORT, "halves": []}
    per_half = []
    for h in (0, 1):
        rows = np.flatnonzero(halves == h)
        pool = np.flatnonzero((halves != h) & embedded.found)
        half = subset(embedded, rows)
        ids = list(labels[rows])
        norm = CohortNorm(templates[draw(pool, COHORT, args.seed * 10 + h)])
        scored = scored_set(norm, templates[rows], half)
        counts, _ = protocols.all_pairs(scored, ids, flip=False, score=scored_similarity)
        raw_counts, _ = protocols.all_pairs(half, ids, flip=True)
        for name in ("mated", "nonmated"):
            setattr(pooled, name, getattr(pooled, name) + getattr(counts, name))
        pooled.mated_missing += counts.mated_missing
        pooled.nonmated_missing += counts.nonmated_missing
        per_half.append((rows, pool, half, ids, scored))
        figures["halves"].append(
            {
                "half": h,
                "images": len(rows),
                "raw_tar": [tar(raw_counts, t) for t in FMRS],
                "asnorm_tar": [tar(counts, t) for t in FMRS],
            }
        )

    table = pooled.threshold_table(
        f"LFW: all pairs within two identity-disjoint halves ({pooled.mated_total:,} mated, "
        f"{pooled.nonmated_total:,} non-mated), each scored {SCORING} against {COHORT} faces of the other half "
        f"({options.describe()})",
        protocols.TABLE_THRESHOLDS,
        SCORING,
    )
    table = dataclasses.replace(table, transfer_margin=DLIB_FACERES_TRANSFER_MARGIN, cohort_faces=COHORT)
    path = DLIB_FACERES_COHORT_TABLE if args.write_table else Path(tempfile.mkdtemp()) / "asnorm_table.json"
    path.write_text(json.dumps(table.to_dict(), indent=2) + "\n")
    print(f"table written to {path}; safe threshold {safe_search_threshold(table):g}")
    figures["safe_threshold"] = safe_search_threshold(table)
    thresholds = {t: table.threshold_for_fmr(t, upper_bound=False) for t in FMRS}

    for h, (rows, pool, half, ids, scored) in enumerate(per_half):
        entry = figures["halves"][h]  # type: ignore[index]
        raw = protocols.identification(half, ids, flip=True)
        asn = protocols.identification(scored, ids, flip=False, score=scored_similarity)
        gallery = asn.gallery_size
        entry["gallery"] = gallery
        entry["raw_open_set"] = open_set(raw.search, fpir_threshold(raw_table, gallery, TARGET_FPIR)[0])
        entry["asnorm_open_set"] = open_set(asn.search, fpir_threshold(table, gallery, TARGET_FPIR)[0])
        entry["depth"] = [
            {
                "candidates": depth,
                **open_set(
                    protocols.identification(scored, ids, flip=False, score=depth_limited(depth)).search,
                    entry["asnorm_open_set"]["default"],  # type: ignore[index]
                ),
            }
            for depth in DEPTHS
        ]
        sizes = []
        for size in COHORT_SIZES:
            if size > len(pool):
                continue
            other = scored_set(CohortNorm(templates[draw(pool, size, 1000 + size + h)]), templates[rows], half)
            counts, _ = protocols.all_pairs(other, ids, flip=False, score=scored_similarity)
            sizes.append(
                {
                    "cohort": size,
                    **{f"fmr_at_{t:g}": counts.fmr(thresholds[t]).as_dict() for t in FMRS},
                    **{f"fnmr_at_{t:g}": counts.fnmr(thresholds[t]).value for t in FMRS},
                }
            )
        entry["cohort_sizes"] = sizes
        report_half(entry, thresholds)
    figures["cost_ms"] = search_cost(templates[per_half[0][0]], templates[per_half[1][1][:COHORT]])
    print(f"\nper search (ms, median over 300 probes): {figures['cost_ms']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


def search_cost(gallery: np.ndarray, cohort: np.ndarray, probes: int = 300) -> dict[str, float]:
    """Median ms per search: the raw top ``COHORT_CANDIDATES`` alone, and with AS-norm as the service
    runs it (search_operations._by_cohort): the first pass over the probes (cold: statistics computed
    for each gallery face not met before) and a second (warm)."""
    present = gallery[~np.isnan(gallery).any(axis=1)].astype(np.float32)
    index = CollectionIndex(present.shape[1], np.arange(len(present)), present, 1)
    asked = present[np.random.default_rng(0).choice(len(present), probes, replace=False)]
    cohort_state = Cohort(1, CohortNorm(cohort))

    def raw(probe: np.ndarray) -> None:
        index.search(probe[None], COHORT_CANDIDATES)

    def normed(probe: np.ndarray) -> None:
        neighbours = index.search(probe[None], COHORT_CANDIDATES)[0]
        cohort_state.scores("g", probe[None], neighbours, index.vectors)

    out = {}
    for name, one in (("raw", raw), ("asnorm_cold", normed), ("asnorm_warm", normed)):
        times = []
        for probe in asked:
            start = time.perf_counter()
            one(probe)
            times.append((time.perf_counter() - start) * 1000)
        out[name] = float(np.median(times))
    return out


def pct(rate: dict[str, float]) -> str:
    return f"{rate['value']:.2%} [{rate['low']:.2%}, {rate['high']:.2%}]"


def report_half(entry: dict, thresholds: dict[float, float]) -> None:
    print(f"\nHalf {entry['half']} ({entry['images']:,} images, gallery {entry['gallery']:,}):")
    for name in ("raw", "asnorm"):
        points = " ".join(f"TAR@{p['target_fmr']:g} {p['tar']:.2%}" for p in entry[f"{name}_tar"])
        o = entry[f"{name}_open_set"]
        print(
            f"  {name:6}: {points}; rank-1 {o['rank1']:.2%}; FNIR@FPIR .01 {pct(o['fnir_at_fpir_0.01'])}, "
            f".001 {pct(o['fnir_at_fpir_0.001'])}; default {o['default']:g}: FPIR {pct(o['default_fpir'])}, "
            f"FNIR {pct(o['default_fnir'])}"
        )
    for d in entry["depth"]:
        print(
            f"  raw top {d['candidates']:>3} rescored: FNIR@FPIR .01 {pct(d['fnir_at_fpir_0.01'])}; at the default "
            f"FPIR {pct(d['default_fpir'])}, FNIR {pct(d['default_fnir'])}"
        )
    for c in entry["cohort_sizes"]:
        print(
            f"  cohort {c['cohort']:>5}: "
            + "; ".join(
                f"at the table's FMR-{t:g} threshold {thresholds[t]:g}: FMR {c[f'fmr_at_{t:g}']['value']:.2e} "
                f"({c[f'fmr_at_{t:g}']['errors']} false matches), FNMR {c[f'fnmr_at_{t:g}']:.2%}"
                for t in FMRS
            )
        )


if __name__ == "__main__":
    main()
