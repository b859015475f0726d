"""Open-set search on LFW, held out: cohort score normalisation (AS-norm) and one template per user.

    PYTHONPATH=. python3 benchmarks/open_set_lfw.py [--seed 0] [--json OUT] [--cache-dir DIR] [--embed]
                                                    [--timing-probes N]

Reads the embeddings of all of LFW that ``benchmarks/fusion_lfw.py`` caches (dlib's ResNet and
faceres through ``eval.embeddings.embed_images``: BlazeFace, the face nearest the centre, plain and
mirrored; ``~/.cache/faceledger/eval``); without ``--embed`` it stops rather than embed an image.
Systems, all on flip templates as the service stores them: dlib by the cosine of its re-normalised
flip template, and dlib on the shipped Euclidean Similarity (baseline rows only); faceres by cosine;
the fusion ``w cos_faceres + (1 - w) cos_dlib``, w = 0.188 (fusion_lfw.py's choice on the same
identity-disjoint halves).

People are dealt into fusion_lfw.py's two identity-disjoint halves (``split_halves``, same seed) and
every figure is reported on each half in turn, held out:

1. **AS-norm**: a pair (e, p) scores ``0.5 ((s - mu_e) / sd_e + (s - mu_p) / sd_p)``, where mu_x and
   sd_x are the mean and standard deviation of x's K highest cosines against a cohort. For a held-out
   half the cohort is drawn from the other half (people in neither its gallery nor its probes), and
   the cohort's kind (one image per person, or any images), its size and K are chosen on that other
   half alone: split again into two identity-disjoint quarters, each measured with a cohort drawn
   from the other quarter; the lowest mean FNIR at FPIR 0.01 wins (ties: smaller cohort, smaller K).
2. **User templates** (SearchUsers): people with at least m + 1 images with a face (m = 2, and
   separately m = 3) are users enrolled with their first m; their other images are mated probes,
   people with one image non-mated probes. (a) today's rule: a user scores its best face, so a search
   compares the probe with m x users faces; (b) one template per user, the re-normalised mean of its
   unit templates, by cosine: users comparisons. Nothing is chosen.

Per held-out half, system and technique: open-set identification (for AS-norm exactly as
``protocols.identification`` runs it, its own split, with the score function swapped; for users the
protocol above): FNIR at FPIR 0.01 and 0.001 with 95% Wilson intervals and the false positives behind
each FPIR, rank-1; TAR at FMR 1e-4 and 1e-5 over all pairs of the half (exact; for users, over all
probe-user pairs); and the time AS-norm adds to one search (the probe against the cohort, top K).

Optimistic: LFW chose faceres' crop padding and the fusion weight; the threshold at each FPIR (or FMR)
is set on the very searches (pairs) it is measured on, for baseline and technique alike, so the
comparison is fair but the rates are not predictions. The cohort is LFW too, photos like the probes;
a service's cohort would be less alike. Intervals treat searches and comparisons as independent,
which images of one person are not (George W. Bush makes most mated pairs of his half). FPIR 0.001
rests on 2 false positives per half: read that column as coarse. With the caches warm it takes
1-2 minutes on two cores and about 1.6 GB of memory; the timings are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402
from fusion_lfw import (  # noqa: E402
    COSINE_SCALE,
    FPIRS,
    exact_point,
    fused_templates,
    split_halves,
    subset,
    unit_flip_templates,
    upper_cosines,
    upper_similarity,
)

from faceledger.eval import metrics, protocols  # noqa: E402
from faceledger.eval.datasets import identity_folders  # noqa: E402
from faceledger.eval.embeddings import EVAL_MODEL, EmbeddedSet, EmbeddingConfig, embed_images  # noqa: E402
from faceledger.vision.faceres import faceres_model  # noqa: E402

W_FUSION = 0.188
FMRS = (1e-4, 1e-5)
KS = (50, 100, 200, 400)
COHORT_SIZES = (400, 800, 1600, 3200)
COHORT_KINDS = ("one image per person", "any images")
USER_FACES = (2, 3)
EUCLIDEAN = "dlib (Euclidean, as shipped)"

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------- measures


def open_set(search: metrics.OpenSetResult) -> dict[str, object]:
    rows = []
    for target in FPIRS:
        threshold = search.threshold_at_fpir(target)
        rows.append(
            {
                "target": target,
                "threshold": threshold,
                "fpir": search.fpir(threshold).as_dict(),
                "fnir": search.fnir(threshold).as_dict(),
            }
        )
    return {
        "rank1": search.rank1_hit_rate,
        "rank1_hits": int(np.count_nonzero(search.mated_top_is_mate)),
        "mated_probes": len(search.mated_top_score),
        "nonmated_probes": len(search.nonmated_top_score),
        "fnir_at_fpir": rows,
    }


def tar_points(scores: np.ndarray, same: np.ndarray) -> list[dict[str, float | int]]:
    """Exact TAR at each of FMRS, with a Wilson interval; a comparison without a template is a non-match."""
    scores = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32)
    mated, nonmated = scores[same], scores[~same]
    points = []
    for target in FMRS:
        point = exact_point(mated, nonmated, target)
        low, high = metrics.Rate(point["mated"] - point["fnmr_errors"], point["mated"]).interval
        points.append({**point, "tar_low": low, "tar_high": high})
    return points


def fnir_at(search: metrics.OpenSetResult, target: float) -> float:
    return search.fnir(search.threshold_at_fpir(target)).value


# ---------------------------------------------------------------------------- AS-norm


def with_stats(units: np.ndarray, stats: np.ndarray | None = None) -> np.ndarray:
    """Rows ``[unit template | mu | sd]``; without stats mu = 0 and sd = 1, so asnorm is the cosine."""
    if stats is None:
        stats = np.column_stack([np.zeros(len(units)), np.ones(len(units))])
    return np.hstack([units, stats])


def asnorm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """AS-norm of the cosine of every row of ``a`` with every row of ``b`` (rows from ``with_stats``)."""
    s = a[:, :-2] @ b[:, :-2].T
    return 0.5 * ((s - a[:, -2:-1]) / a[:, -1:] + (s - b[:, -2]) / b[:, -1])


def identification_scored(
    rows: np.ndarray, identities: Sequence[str], found: np.ndarray, score: Score
) -> protocols.IdentificationResult:
    """``protocols.identification`` (its enrolment, probes and search) with ``score(probes, gallery)``
    in place of its Similarity matrix; ``rows`` are whatever ``score`` reads."""
    embedded = EmbeddedSet([str(n) for n in range(len(rows))], rows, rows, found, COSINE_SCALE)
    return protocols.identification(embedded, identities, flip=False, score=score)


def cohort_top(units: np.ndarray, cohort: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Each row's ``k`` highest cosines against the cohort, highest first (float32)."""
    c32 = cohort.astype(np.float32).T
    out = np.empty((len(units), k), dtype=np.float32)
    for start in range(0, len(units), block):
        s = units[start : start + block].astype(np.float32) @ c32
        top = np.partition(s, s.shape[1] - k, axis=1)[:, -k:]
        out[start : start + block] = -np.sort(-top, axis=1)
    return out


def top_stats(top: np.ndarray, k: int) -> np.ndarray:
    head = top[:, :k].astype(np.float64)
    return np.column_stack([head.mean(axis=1), head.std(axis=1)])


def draw_cohort(
    pool: np.ndarray, labels: np.ndarray, found: np.ndarray, kind: str, size: int, seed: Sequence[int]
) -> np.ndarray | None:
    """``size`` rows of ``pool`` with a face, at random (one per person for the first kind); None if too few."""
    rng = np.random.default_rng(list(seed))
    pool = pool[found[pool]]
    if kind == COHORT_KINDS[0]:
        first: dict[str, int] = {}
        for row in rng.permutation(pool):
            first.setdefault(labels[row], int(row))
        pool = np.array(sorted(first.values()))
    if size > len(pool):
        return None
    return np.sort(rng.choice(pool, size, replace=False))


def choose_asnorm(
    units: np.ndarray, rows: np.ndarray, labels: np.ndarray, found: np.ndarray, seed: int, half: int
) -> dict[str, object]:
    """Cohort kind, size and K on one half only: FNIR at FPIR 0.01 within each quarter (people
    split in two), the cohort drawn from the other quarter, averaged over the two quarters."""
    quarter = split_halves(list(labels[rows]), seed)
    grid: dict[tuple[str, int, int], list[float]] = {}
    baseline = []
    for q in (0, 1):
        test, pool = rows[quarter == q], rows[quarter != q]
        ids = list(labels[test])
        baseline.append(fnir_at(identification_scored(with_stats(units[test]), ids, found[test], asnorm).search, 0.01))
        for c, kind in enumerate(COHORT_KINDS):
            for size in COHORT_SIZES:
                cohort = draw_cohort(pool, labels, found, kind, size, (seed, half, q, c, size))
                if cohort is None:
                    continue
                top = cohort_top(units[test], units[cohort], min(max(KS), size))
                for k in (k for k in KS if k <= size):
                    scored = with_stats(units[test], top_stats(top, k))
                    search = identification_scored(scored, ids, found[test], asnorm).search
                    grid.setdefault((kind, size, k), []).append(fnir_at(search, 0.01))
    means = {key: float(np.mean(v)) for key, v in grid.items() if len(v) == 2}
    kind, size, k = min(means, key=lambda key: (round(means[key], 12), key[1], key[2]))
    return {
        "kind": kind,
        "size": size,
        "k": k,
        "train_fnir_0.01": means[(kind, size, k)],
        "train_fnir_0.01_baseline": float(np.mean(baseline)),
        "grid": [{"kind": a, "size": b, "k": c, "train_fnir_0.01": v} for (a, b, c), v in sorted(means.items())],
    }


def asnorm_pairs(cos: np.ndarray, stats: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """AS-norm of pair cosines; ``first``, ``second``: each pair's rows (upper_cosines' order)."""
    mu, sd = stats[:, 0].astype(np.float32), stats[:, 1].astype(np.float32)
    return 0.5 * ((cos - mu[first]) / sd[first] + (cos - mu[second]) / sd[second])


def asnorm_cost(cohort: np.ndarray, k: int, probes: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """ms that AS-norm adds to one search: the probe's top-k cosines against the cohort, mean and sd
    (the gallery's are computed at enrolment). Median of ``rounds`` passes over ``probes``."""
    c32 = np.ascontiguousarray(cohort, dtype=np.float32)
    p32 = np.ascontiguousarray(probes, dtype=np.float32)
    index = faiss.IndexFlatIP(c32.shape[1])
    index.add(c32)

    def by_numpy(p: np.ndarray) -> tuple[float, float]:
        top = np.partition(c32 @ p, len(c32) - k)[-k:]
        return float(top.mean()), float(top.std())

    def by_faiss(p: np.ndarray) -> tuple[float, float]:
        top, _ = index.search(p[None, :], k)
        return float(top.mean()), float(top.std())

    out = {}
    for name, one in (("numpy", by_numpy), ("faiss", by_faiss)):
        per_round = []
        for _ in range(rounds):
            start = time.perf_counter()
            for p in p32:
                one(p)
            per_round.append((time.perf_counter() - start) / len(p32) * 1000)
        out[f"{name}_ms"] = float(np.median(per_round))
    start = time.perf_counter()
    index.search(p32, k)
    out["faiss_batch_ms"] = (time.perf_counter() - start) / len(p32) * 1000
    return out


# ---------------------------------------------------------------------------- user templates


def user_split(
    identities: Sequence[str], found: np.ndarray, faces: int
) -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray]:
    """Users (the rows of their first ``faces`` images with a face; people with more than ``faces``
    such images), mated probe rows (their other images) with each one's user, non-mated probe rows
    (people with a single image)."""
    by_person: dict[str, list[int]] = {}
    for row, identity in enumerate(identities):
        by_person.setdefault(identity, []).append(row)
    users, mated, mated_user, nonmated = [], [], [], []
    for rows in by_person.values():
        with_face = [r for r in rows if found[r]]
        if len(rows) == 1:
            nonmated.extend(rows)
        elif len(with_face) > faces:
            enrolled = with_face[:faces]
            mated.extend(r for r in rows if r not in enrolled)
            mated_user.extend(len(users) for r in rows if r not in enrolled)
            users.append(enrolled)
    return users, np.array(mated), np.array(mated_user), np.array(nonmated)


def user_measures(
    templates: np.ndarray,
    score: Score,
    gallery: np.ndarray,
    per_user: int,
    mated: np.ndarray,
    mated_user: np.ndarray,
    nonmated: np.ndarray,
) -> dict[str, object]:
    """``gallery``: ``per_user`` rows per user, user by user; a user scores its best row."""
    users = len(gallery) // per_user
    owner = np.repeat(np.arange(users), per_user)
    search = metrics.open_set_search(gallery, owner, templates[mated], mated_user, templates[nonmated], score)
    probes = templates[np.concatenate([mated, nonmated])]
    user_scores = score(probes, gallery).reshape(len(probes), users, per_user).max(axis=2)
    same = np.concatenate([mated_user, np.full(len(nonmated), -1)])[:, None] == np.arange(users)[None, :]
    return {
        **open_set(search),
        "users": users,
        "comparisons_per_search": len(gallery),
        "probe_user_pairs": tar_points(user_scores.ravel(), same.ravel()),
    }


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b.T


# ---------------------------------------------------------------------------- printing


def print_row(name: str, m: dict[str, object], pairs: list[dict[str, float | int]], extra: str = "") -> None:
    fnirs = "  ".join(
        f"{r['fnir']['value']:.2%} [{r['fnir']['low']:.2%}, {r['fnir']['high']:.2%}] FP {r['fpir']['errors']}"
        for r in m["fnir_at_fpir"]  # type: ignore[attr-defined]
    )
    tars = "  ".join(f"{p['tar']:.2%} [{p['tar_low']:.2%}, {p['tar_high']:.2%}]" for p in pairs)
    print(f"    {name:44s} rank-1 {m['rank1']:.2%}  FNIR@FPIR .01/.001 {fnirs}  TAR@1e-4/1e-5 {tars}{extra}")


# ---------------------------------------------------------------------------- main


def refuse_embedding(done: int, total: int) -> None:
    raise SystemExit(f"the embedding cache lacks {total:,} images: run benchmarks/fusion_lfw.py first, or --embed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--embed", action="store_true", help="embed what the cache lacks (slow) instead of stopping")
    parser.add_argument("--workers", type=int, default=2, help="with --embed")
    parser.add_argument("--seed", type=int, default=0, help="fusion_lfw.py's halves; also quarters and cohorts")
    parser.add_argument("--timing-probes", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    began = time.perf_counter()

    root = require("lfw")
    images = identity_folders(root)
    labels = np.array(images.identities)
    embedded = {}
    for name, model in (("dlib", EVAL_MODEL), ("faceres", faceres_model(threads=1, flip=False))):
        embedded[name] = embed_images(
            root,
            images.paths,
            config=EmbeddingConfig(face_choice="centre", model=model),
            cache_dir=args.cache_dir,
            workers=args.workers,
            on_progress=None if args.embed else refuse_embedding,
        )
    dlib_set = embedded["dlib"]
    dlib_unit, faceres_unit = unit_flip_templates(dlib_set), unit_flip_templates(embedded["faceres"])
    found = dlib_set.found & embedded["faceres"].found
    systems = {
        "dlib (cosine)": dlib_unit,
        "faceres (cosine)": faceres_unit,
        f"fusion w={W_FUSION}": fused_templates(faceres_unit, dlib_unit, W_FUSION),
    }
    half = split_halves(images.identities, args.seed)
    print(
        f"LFW: {len(labels):,} images of {len(set(images.identities)):,} people, {int((~found).sum())} without a "
        f"face; halves of {int((half == 0).sum()):,} and {int((half == 1).sum()):,} images",
        flush=True,
    )
    results: dict[str, object] = {"w_fusion": W_FUSION, "seed": args.seed}

    # -- AS-norm: settings chosen on each half, for use on the other
    choices: dict[int, dict[str, dict[str, object]]] = {0: {}, 1: {}}
    print("\nAS-norm settings, chosen on one half (quarters, FNIR at FPIR 0.01), used on the other:")
    for t in (0, 1):
        rows = np.flatnonzero(half == t)
        for name, units in systems.items():
            c = choose_asnorm(units, rows, labels, found, args.seed, t)
            choices[t][name] = c
            print(
                f"  on half {t}, {name:18s}: cohort {c['kind']}, {c['size']}, K {c['k']}: quarters' FNIR "
                f"{c['train_fnir_0.01']:.2%} (raw cosine {c['train_fnir_0.01_baseline']:.2%})",
                flush=True,
            )
    results["asnorm_choice"] = {f"chosen_on_half_{t}": c for t, c in choices.items()}

    # -- held-out halves
    heldout: dict[str, object] = {}
    costs: dict[str, object] = {}
    for h in (0, 1):
        rows, t = np.flatnonzero(half == h), 1 - h
        ids, n = list(labels[rows]), len(rows)
        out: dict[str, object] = {}
        print(f"\nHalf {h} held out ({n:,} images; AS-norm cohort from half {t}, settings chosen on half {t}):")
        print("    FNIR at FPIR with 95% interval and the false positives (FP) behind it; TAR over all pairs")
        cosines, same = upper_cosines([units[rows] for units in systems.values()], labels[rows])
        first, second = (i.astype(np.int32) for i in np.triu_indices(n, 1))
        codes = np.unique(labels[rows], return_inverse=True)[1]
        assert np.array_equal(codes[first] == codes[second], same), "pair order differs from np.triu_indices"
        ident = protocols.identification(subset(dlib_set, rows), ids, flip=True)
        out[EUCLIDEAN] = {
            **open_set(ident.search),
            "gallery": ident.gallery_size,
            "pairs": tar_points(upper_similarity(subset(dlib_set, rows), n), same),
        }
        print_row(EUCLIDEAN, out[EUCLIDEAN], out[EUCLIDEAN]["pairs"])  # type: ignore[arg-type]
        for (name, units), cos in zip(systems.items(), cosines, strict=True):
            c = choices[t][name]
            cohort = draw_cohort(np.flatnonzero(half == t), labels, found, c["kind"], c["size"], (args.seed, 9, h))
            assert cohort is not None
            stats = top_stats(cohort_top(units[rows], units[cohort], c["k"]), c["k"])
            base = identification_scored(with_stats(units[rows]), ids, found[rows], asnorm)
            normed = identification_scored(with_stats(units[rows], stats), ids, found[rows], asnorm)
            library = protocols.identification(
                EmbeddedSet(list(ids), units[rows], units[rows], found[rows], COSINE_SCALE), ids, flip=False
            )
            agrees = [(r["fpir"], r["fnir"]) for r in open_set(library.search)["fnir_at_fpir"]] == [
                (r["fpir"], r["fnir"]) for r in open_set(base.search)["fnir_at_fpir"]
            ]
            out[name] = {**open_set(base.search), "pairs": tar_points(cos, same), "library_agrees": agrees}
            out[f"{name} + AS-norm"] = {
                **open_set(normed.search),
                "pairs": tar_points(asnorm_pairs(cos, stats, first, second), same),
                "cohort": {"kind": c["kind"], "size": int(c["size"]), "k": int(c["k"])},
            }
            print_row(name, out[name], out[name]["pairs"])  # type: ignore[arg-type]
            print_row(
                f"{name} + AS-norm",
                out[f"{name} + AS-norm"],
                out[f"{name} + AS-norm"]["pairs"],  # type: ignore[arg-type]
                f"  ({c['kind']}, {c['size']}, K {c['k']})",
            )
            if not agrees:
                print(f"    (!) {name}: swapped-score identification differs from protocols.identification's")
            costs[f"half {h} {name}"] = {
                "cohort": int(c["size"]),
                "k": int(c["k"]),
                "dimension": units.shape[1],
                **asnorm_cost(units[cohort], int(c["k"]), units[rows[: args.timing_probes]]),
            }
        del cosines, same, first, second

        # -- user templates on this half (nothing chosen)
        dlib_templates = dlib_set.templates(True)[rows]
        euclidean = partial(protocols.similarity_matrix, scale=dlib_set.similarity)
        for faces in USER_FACES:
            users, mated, mated_user, nonmated = user_split(ids, found[rows], faces)
            flat = np.concatenate(users)
            print(
                f"  users of {faces} faces (people with > {faces} images with a face): {len(users):,} users, "
                f"{len(mated):,} mated and {len(nonmated):,} non-mated searches; max compares {len(flat):,} faces, "
                f"mean template {len(users):,} users"
            )
            key = f"users_{faces}"
            out[key] = {
                EUCLIDEAN + ", max": user_measures(
                    dlib_templates, euclidean, dlib_templates[flat], faces, mated, mated_user, nonmated
                )
            }
            for name, units in systems.items():
                u = units[rows]
                mean = u[flat].reshape(len(users), faces, -1).mean(axis=1)
                mean /= np.linalg.norm(mean, axis=1, keepdims=True)
                out[key][f"{name}, max"] = user_measures(u, cosine, u[flat], faces, mated, mated_user, nonmated)
                out[key][f"{name}, mean template"] = user_measures(u, cosine, mean, 1, mated, mated_user, nonmated)
            for name, m in out[key].items():
                print_row(name, m, m["probe_user_pairs"], f"  ({m['comparisons_per_search']:,} comparisons)")
        heldout[f"half_{h}"] = out
    results["heldout"] = heldout

    print("\nAS-norm's extra cost per search (probe vs cohort, top K; the gallery's stats are kept from enrolment):")
    for name, c in costs.items():
        print(
            f"  {name:28s} cohort {c['cohort']:,} x {c['dimension']}-d, K {c['k']}: numpy {c['numpy_ms']:.3f} ms, "
            f"faiss {c['faiss_ms']:.3f} ms (batched {c['faiss_batch_ms']:.4f} ms/probe)"
        )
    results["asnorm_cost_ms"] = costs
    results["seconds"] = time.perf_counter() - began
    print(f"\nTotal {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
