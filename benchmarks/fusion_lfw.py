"""dlib's ResNet, faceres, and a score-level fusion of the two, on all of LFW.

    PYTHONPATH=. python benchmarks/fusion_lfw.py [--workers 2] [--limit-identities N] [--json OUT]
                                                 [--skip-timing] [--timing-seconds S]

Embeds every LFW image (``lfw/IDENTITY/*.jpg``, 13,233 images of 5,749 people) with both models
through faceledger's evaluation code (``eval.embeddings.embed_images``: BlazeFace, the face
nearest the image centre, each model's own chip, plain and mirrored; cached under
``~/.cache/faceledger/eval``), then measures with flip test-time augmentation on:

- **dlib** as shipped: ``DlibResNetModel``'s Euclidean similarity scale on the mean of the plain
  and mirrored embeddings (what ``faceledger eval`` measures and what the service stores);
- **faceres** by cosine: the re-normalised mean of the plain and mirrored unit embeddings, which
  is the template ``faceres_model(flip=True)`` stores (the cosine is put on faceres' own
  similarity scale, so bins and thresholds read as Similarity); also, for comparison, faceres as
  ``faceledger eval`` scores it, on the *un*-normalised mean;
- **fusion**: ``w * cos_faceres + (1 - w) * cos_dlib`` (cosine of each model's re-normalised flip
  template). That is the cosine of the concatenation ``[sqrt(w) u_faceres, sqrt(1-w) u_dlib]``,
  a unit vector, so the library's own all-pairs and identification protocols measure it unchanged.
  The weight is chosen in z-normalised form (``w_z`` on each model's cosine less the mean over the
  standard deviation of its non-mated training scores) and converted to the raw ``w`` above.

Weight choice, two ways, both on LFW (hence optimistic for LFW figures; see the printed notes):

- *View 2*: for each of the 10 folds of ``lfw_meta/pairs.txt`` (people disjoint across folds),
  ``w_z`` on a 0.01 grid maximising verification accuracy (best threshold) on the other nine
  folds (middle of ties), tested on the held-out fold;
- *identity-disjoint halves*: people shuffled (``--seed``) and dealt greedily into two halves of
  about equal image count; on each half, ``w_z`` on a 0.01 grid maximising TAR at FMR 1e-4 over
  all pairs of that half (exact); tested on all pairs of, and identification within, the other half.

Printed per system: TAR at FMR 1e-3, 1e-4, 1e-5 over all pairs of LFW images
(``protocols.all_pairs``: scores binned at 0.01 Similarity, threshold the lowest bin edge whose
FMR <= target, with error counts) and exactly from the pair scores as a cross-check; open-set
identification as ``protocols.identification`` runs it (people with >= 2 images enrolled with their
first image, their other images mated probes, everyone else non-mated): FNIR at FPIR 0.01 and 0.001,
rank-1; a sweep of the fusion weight over all of LFW (in-sample); and embedding time per face at
batch 32 (chips of the first LFW images, network only, no detection, flip off).

Needs faceres installed (``faceledger models add-faceres``). With both caches warm it runs in
about 4-5 minutes on two busy cores (about 2 GB of memory); embedding all of LFW with faceres from
scratch adds about 7 minutes with two workers. Run it with the repository on PYTHONPATH (the
script's folder comes first on sys.path, so a ``faceledger`` installed from another checkout would
otherwise be the one measured).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.eval import metrics, protocols  # noqa: E402
from faceledger.eval.datasets import identity_folders, read_lfw_pairs  # noqa: E402
from faceledger.eval.embeddings import EVAL_MODEL, EmbeddedSet, EmbeddingConfig, embed_images  # noqa: E402
from faceledger.vision import DlibResNetModel, FaceAnalyzer, read_image_file  # noqa: E402
from faceledger.vision.faceres import FACERES_SPEC, faceres_model  # noqa: E402
from faceledger.vision.similarity import SimilarityScale  # noqa: E402

FMRS = (1e-3, 1e-4, 1e-5)
FPIRS = (0.01, 0.001)
# On unit vectors: cosine 0.52 reports 80 (faceres' spec); only a monotonic map of the cosine.
COSINE_SCALE: SimilarityScale = FACERES_SPEC.similarity
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
SWEEP = np.round(np.linspace(0.0, 1.0, 21), 2)


# ---------------------------------------------------------------------------- templates and sets


def unit_flip_templates(embedded: EmbeddedSet) -> np.ndarray:
    """The re-normalised mean of the plain and mirrored embeddings (NaN rows stay NaN)."""
    both = embedded.vectors.astype(np.float64) + embedded.flipped.astype(np.float64)
    return both / np.linalg.norm(both, axis=1, keepdims=True)


def fixed_set(embedded: EmbeddedSet, templates: np.ndarray, scale: SimilarityScale) -> EmbeddedSet:
    """An EmbeddedSet whose flip template is exactly ``templates`` (plain = mirrored)."""
    return EmbeddedSet(list(embedded.paths), templates, templates, embedded.found.copy(), scale)


def fused_templates(faceres_unit: np.ndarray, dlib_unit: np.ndarray, w: float) -> np.ndarray:
    """Unit vectors whose dot product is ``w cos_faceres + (1 - w) cos_dlib``."""
    return np.hstack([math.sqrt(w) * faceres_unit, math.sqrt(1.0 - w) * dlib_unit])


def subset(embedded: EmbeddedSet, rows: np.ndarray) -> EmbeddedSet:
    return EmbeddedSet(
        [embedded.paths[r] for r in rows],
        embedded.vectors[rows],
        embedded.flipped[rows],
        embedded.found[rows],
        embedded.similarity,
    )


# ---------------------------------------------------------------------------- exact pair scores


def upper_cosines(
    units: Sequence[np.ndarray], labels: np.ndarray, block: int = 1024
) -> tuple[list[np.ndarray], np.ndarray]:
    """Cosine of every pair i < j for each of ``units`` (float32; NaN where a face is missing),
    and whether the pair is mated."""
    n = len(labels)
    outs: list[list[np.ndarray]] = [[] for _ in units]
    same_parts = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        upper = np.arange(start, stop)[:, None] < np.arange(start, n)[None, :]
        for k, u in enumerate(units):
            u32 = u.astype(np.float32)
            outs[k].append((u32[start:stop] @ u32[start:].T)[upper])
        same_parts.append((labels[start:stop, None] == labels[None, start:])[upper])
    return [np.concatenate(parts) for parts in outs], np.concatenate(same_parts)


def upper_similarity(embedded: EmbeddedSet, n: int, block: int = 1024) -> np.ndarray:
    """The library's unclamped Similarity of every pair i < j on the flip templates (float32)."""
    templates = embedded.templates(True)
    parts = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        upper = np.arange(start, stop)[:, None] < np.arange(start, n)[None, :]
        scores = protocols.similarity_matrix(templates[start:stop], templates[start:], embedded.similarity)
        parts.append(scores[upper].astype(np.float32))
    return np.concatenate(parts)


def exact_point(mated: np.ndarray, nonmated: np.ndarray, target: float) -> dict[str, float | int]:
    """As metrics.tar_at_fmr (lowest threshold with FMR <= target), by partition rather than sort."""
    n = len(nonmated)
    allowed = int(math.floor(target * n + 1e-9))
    kth = np.partition(nonmated, n - 1 - allowed)[n - 1 - allowed]
    threshold = float(np.nextafter(kth, np.float32(np.inf)))
    false_matches = int(np.count_nonzero(nonmated >= threshold))
    misses = int(np.count_nonzero(~(mated >= threshold)))
    return {
        "target": target,
        "threshold": threshold,
        "fmr_errors": false_matches,
        "nonmated": n,
        "fnmr_errors": misses,
        "mated": len(mated),
        "tar": 1.0 - misses / len(mated),
    }


def zstats(cos: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    nonmated = cos[~same & np.isfinite(cos)]
    return float(nonmated.mean()), float(nonmated.std())


def raw_weight(w_z: float, sd_faceres: float, sd_dlib: float) -> float:
    """``w_z`` on z-scores as the weight on raw cosines (same ranking, both sums scaled to 1)."""
    a, b = w_z / sd_faceres, (1.0 - w_z) / sd_dlib
    return a / (a + b)


def middle_of_best(values: np.ndarray) -> int:
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return int(best[len(best) // 2])


def fuse(cf: np.ndarray, cd: np.ndarray, w: float) -> np.ndarray:
    out = np.float32(w) * cf + np.float32(1.0 - w) * cd
    return np.where(np.isfinite(cf) & np.isfinite(cd), out, -np.inf).astype(np.float32)


# ---------------------------------------------------------------------------- library protocols


def library_measures(embedded: EmbeddedSet, identities: Sequence[str]) -> dict[str, object]:
    started = time.perf_counter()
    counts, _ = protocols.all_pairs(embedded, identities, flip=True)
    points = []
    for target in FMRS:
        threshold = counts.threshold_at_fmr(target)
        fmr, fnmr = counts.fmr(threshold), counts.fnmr(threshold)
        points.append(
            {
                "target": target,
                "threshold": threshold,
                "fmr_errors": fmr.errors,
                "nonmated": fmr.trials,
                "fnmr_errors": fnmr.errors,
                "mated": fnmr.trials,
                "tar": 1.0 - fnmr.value,
            }
        )
    ident = protocols.identification(embedded, identities, flip=True)
    search = ident.search
    rows = []
    for target in FPIRS:
        threshold = search.threshold_at_fpir(target)
        fpir, fnir = search.fpir(threshold), search.fnir(threshold)
        rows.append(
            {
                "target": target,
                "threshold": threshold,
                "fpir_errors": fpir.errors,
                "nonmated_probes": fpir.trials,
                "fnir_errors": fnir.errors,
                "mated_probes": fnir.trials,
                "fnir": fnir.value,
            }
        )
    return {
        "all_pairs": points,
        "identification": {
            "gallery": ident.gallery_size,
            "mated_probes": ident.mated_probes,
            "nonmated_probes": ident.nonmated_probes,
            "rank1": search.rank1_hit_rate,
            "rank1_hits": int(np.count_nonzero(search.mated_top_is_mate)),
            "fnir_at_fpir": rows,
        },
        "seconds": time.perf_counter() - started,
    }


def print_measures(name: str, m: dict[str, object]) -> None:
    points = m["all_pairs"]
    ident = m["identification"]
    assert isinstance(points, list) and isinstance(ident, dict)
    tars = "  ".join(
        f"FMR {p['target']:.0e}: TAR {p['tar']:.4%} (miss {p['fnmr_errors']:,}/{p['mated']:,}, "
        f"FM {p['fmr_errors']:,}/{p['nonmated']:,}, thr {p['threshold']:.2f})"
        for p in points
    )
    fnirs = "  ".join(
        f"FPIR {r['target']:g}: FNIR {r['fnir']:.3%} ({r['fnir_errors']:,}/{r['mated_probes']:,}; "
        f"FP {r['fpir_errors']}/{r['nonmated_probes']:,}, thr {r['threshold']:.2f})"
        for r in ident["fnir_at_fpir"]
    )
    print(f"  {name}")
    print(f"    all pairs: {tars}")
    print(
        f"    identification (gallery {ident['gallery']:,}): rank-1 {ident['rank1']:.3%} "
        f"({ident['rank1_hits']:,}/{ident['mated_probes']:,})  {fnirs}"
    )


# ---------------------------------------------------------------------------- weight choice


def view2_choice(pair_cos: dict[str, np.ndarray], same: np.ndarray, folds: np.ndarray) -> list[dict[str, float]]:
    """Per View-2 fold: w_z maximising accuracy on the other folds, and the held-out accuracy."""
    out = []
    for fold in np.unique(folds):
        train = folds != fold
        if len(set(same[train])) < 2 or len(set(same[~train])) < 2:  # a small --limit-identities
            continue
        mf, sf = zstats(pair_cos["faceres"][train], same[train])
        md, sd = zstats(pair_cos["dlib"][train], same[train])
        zf, zd = (pair_cos["faceres"] - mf) / sf, (pair_cos["dlib"] - md) / sd
        accuracies = []
        for w in GRID:
            scores = w * zf[train] + (1 - w) * zd[train]
            accuracies.append(
                metrics.accuracy(scores, same[train], metrics.best_accuracy_threshold(scores, same[train]))
            )
        w_z = float(GRID[middle_of_best(np.array(accuracies))])
        scores = w_z * zf + (1 - w_z) * zd
        threshold = metrics.best_accuracy_threshold(scores[train], same[train])
        out.append(
            {
                "fold": int(fold) + 1,
                "w_z": w_z,
                "w": raw_weight(w_z, sf, sd),
                "train_accuracy": max(accuracies),
                "test_accuracy": metrics.accuracy(scores[~train], same[~train], threshold),
            }
        )
    return out


def split_halves(identities: Sequence[str], seed: int) -> np.ndarray:
    """0/1 per image: people shuffled, each dealt to the half with fewer images so far."""
    people: dict[str, int] = {}
    for identity in identities:
        people[identity] = people.get(identity, 0) + 1
    names = sorted(people)
    order = np.random.default_rng(seed).permutation(len(names))
    # biggest first so the halves end up close in image count
    ordered = sorted((names[i] for i in order), key=lambda name: -people[name])
    half_of, totals = {}, [0, 0]
    for name in ordered:
        h = 0 if totals[0] <= totals[1] else 1
        half_of[name] = h
        totals[h] += people[name]
    return np.array([half_of[identity] for identity in identities])


def choose_on_half(cf: np.ndarray, cd: np.ndarray, same: np.ndarray) -> dict[str, object]:
    """w_z maximising TAR at FMR 1e-4 over all pairs of one half (exact)."""
    mf, sf = zstats(cf, same)
    md, sd = zstats(cd, same)
    tars = []
    for w_z in GRID:
        fused = fuse(cf, cd, raw_weight(float(w_z), sf, sd))
        tars.append(exact_point(fused[same], fused[~same], 1e-4)["tar"])
    w_z = float(GRID[middle_of_best(np.array(tars))])
    return {
        "w_z": w_z,
        "w": raw_weight(w_z, sf, sd),
        "train_tar_1e-4": max(tars),
        "train_tar_1e-4_at_w_z": {f"{g:.1f}": tars[i] for i, g in enumerate(GRID) if round(g * 10) == g * 10},
        "nonmated_mean_sd": {"faceres": (mf, sf), "dlib": (md, sd)},
    }


# ---------------------------------------------------------------------------- timing


def timing(seconds: float, rounds: int = 5) -> dict[str, object]:
    """ms per face at batch 32 (flip off, network only) on chips of the first LFW images."""
    paths = sorted(require("lfw").glob("*/*.jpg"))
    models = {
        "dlib": lambda threads: DlibResNetModel(threads=threads, flip=False),
        "faceres": lambda threads: faceres_model(threads=threads, flip=False),
    }
    out: dict[str, object] = {}
    for name, make in models.items():
        analyzer = FaceAnalyzer(model=make(1))
        chips: list[np.ndarray] = []
        for path in paths:
            faces = analyzer.analyze(read_image_file(path).pixels, embed=False)
            chips.extend(f.chip for f in faces[:1])
            if len(chips) >= 64:
                break
        for threads in (0, 1):
            model = make(threads)
            model.embed(chips[:32])  # warm-up
            per_round = []
            for _ in range(rounds):
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds / rounds:
                    for i in (0, 32):
                        model.embed(chips[i : i + 32])
                        done += 32
                per_round.append((time.perf_counter() - start) / done * 1000)
            out[f"{name} threads={threads}"] = {
                "ms_per_face_median": float(np.median(per_round)),
                "min": float(min(per_round)),
                "max": float(max(per_round)),
                "chip": int(chips[0].shape[0]),
            }
            print(
                f"  {name:8s} threads={threads} ({chips[0].shape[0]}px chips): {np.median(per_round):.2f} ms/face "
                f"median of {rounds} rounds (min {min(per_round):.2f}, max {max(per_round):.2f})",
                flush=True,
            )
    return out


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--limit-identities", type=int, default=None, help="first N identity folders only")
    parser.add_argument("--seed", type=int, default=0, help="for the identity-disjoint halves")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--timing-seconds", type=float, default=10.0, help="per model and thread count")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    began = time.perf_counter()
    results: dict[str, object] = {}

    root = require("lfw")
    images = identity_folders(root, limit_identities=args.limit_identities)
    labels = np.array(images.identities)
    print(f"LFW: {len(images.paths):,} images of {len(set(images.identities)):,} people", flush=True)
    embedded = {}
    for name, model in (("dlib", EVAL_MODEL), ("faceres", faceres_model(threads=1, flip=False))):
        started = time.perf_counter()
        embedded[name] = embed_images(
            root,
            images.paths,
            config=EmbeddingConfig(face_choice="centre", model=model),
            cache_dir=args.cache_dir,
            workers=args.workers,
        )
        print(
            f"  {name} ({model.version}): {time.perf_counter() - started:.0f} s to embed or load, "
            f"failures to acquire {len(embedded[name].failures_to_acquire)}",
            flush=True,
        )
    dlib_set, faceres_lib_set = embedded["dlib"], embedded["faceres"]
    dlib_unit, faceres_unit = unit_flip_templates(dlib_set), unit_flip_templates(faceres_lib_set)
    faceres_set = fixed_set(faceres_lib_set, faceres_unit, COSINE_SCALE)
    norms = np.linalg.norm(faceres_lib_set.templates(True), axis=1)
    dlib_norms = np.linalg.norm(dlib_set.templates(True), axis=1)
    results["template_norms"] = {
        "faceres_flip_mean": [float(np.nanmin(norms)), float(np.nanmedian(norms)), float(np.nanmax(norms))],
        "dlib_flip_mean": [float(np.nanmin(dlib_norms)), float(np.nanmedian(dlib_norms)), float(np.nanmax(dlib_norms))],
    }
    print(f"  template norms (min, median, max): {results['template_norms']}")

    # -- weight choice 1: View 2 folds (pairs.txt), accuracy criterion
    pairs = [
        p
        for p in read_lfw_pairs(require("lfw_meta", "pairs.txt"))
        if args.limit_identities is None or {p.first, p.second} <= set(images.paths)
    ]
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    first, second = dlib_set.rows([p.first for p in pairs]), dlib_set.rows([p.second for p in pairs])
    pair_cos = {
        "faceres": np.nan_to_num(np.sum(faceres_unit[first] * faceres_unit[second], axis=1), nan=-1.0),
        "dlib": np.nan_to_num(np.sum(dlib_unit[first] * dlib_unit[second], axis=1), nan=-1.0),
    }
    view2 = view2_choice(pair_cos, same, folds)
    results["view2"] = view2
    print(f"\nView 2 ({len(pairs):,} pairs.txt pairs): w_z chosen on 9 folds by accuracy, tested on the 10th")
    for row in view2:
        print(
            f"  fold {row['fold']:2d}: w_z {row['w_z']:.2f} (w on raw cosines {row['w']:.3f}), "
            f"train acc {row['train_accuracy']:.4%}, test acc {row['test_accuracy']:.4%}"
        )
    for name in ("dlib", "faceres"):
        accuracy = [f.accuracy for f in metrics.k_fold_accuracy(pair_cos[name], same, folds)]
        print(f"  {name} alone (cosine, flip): {np.mean(accuracy):.4%} +- {np.std(accuracy):.4%}")
        results[f"view2_accuracy_{name}"] = float(np.mean(accuracy))
    test_accuracy = [row["test_accuracy"] for row in view2]
    print(f"  fusion, held-out folds: {np.mean(test_accuracy):.4%} +- {np.std(test_accuracy):.4%}", flush=True)
    results["view2_accuracy_fusion"] = float(np.mean(test_accuracy))
    w_view2 = float(np.median([row["w"] for row in view2])) if view2 else 0.5

    # -- weight choice 2: identity-disjoint halves, TAR at FMR 1e-4 over all pairs of a half
    half = split_halves(images.identities, args.seed)
    halves: list[dict[str, object]] = []
    for h in (0, 1):
        rows = np.flatnonzero(half == h)
        (cf, cd), half_same = upper_cosines([faceres_unit[rows], dlib_unit[rows]], labels[rows])
        choice = choose_on_half(cf, cd, half_same)
        choice.update(
            {
                "half": h,
                "images": len(rows),
                "people": len(set(labels[rows])),
                "mated": int(half_same.sum()),
                "nonmated": int((~half_same).sum()),
            }
        )
        halves.append(choice)
        print(
            f"\nHalf {h} ({len(rows):,} images, {choice['people']:,} people, {choice['mated']:,} mated / "
            f"{choice['nonmated']:,} non-mated pairs): chosen w_z {choice['w_z']:.2f} (w {choice['w']:.3f}), "
            f"train TAR@1e-4 {choice['train_tar_1e-4']:.4%}; TAR@1e-4 by w_z {choice['train_tar_1e-4_at_w_z']}",
            flush=True,
        )
        del cf, cd, half_same
    results["halves_choice"] = halves
    w_halves = float(np.mean([c["w"] for c in halves]))

    print("\nHeld-out halves: each half measured with the weight chosen on the other half (library protocols)")
    heldout = {}
    for h in (0, 1):
        rows = np.flatnonzero(half == h)
        ids = list(labels[rows])
        w = float(halves[1 - h]["w"])
        systems = {
            "dlib (Euclidean, as shipped)": subset(dlib_set, rows),
            "faceres (cosine)": subset(faceres_set, rows),
            f"fusion w={w:.3f} (chosen on half {1 - h})": fixed_set(
                subset(dlib_set, rows), fused_templates(faceres_unit[rows], dlib_unit[rows], w), COSINE_SCALE
            ),
        }
        print(f" half {h}:")
        heldout[h] = {}
        for name, s in systems.items():
            heldout[h][name] = library_measures(s, ids)
            print_measures(name, heldout[h][name])
    results["heldout_halves"] = heldout

    # -- all of LFW, library protocols
    print(f"\nAll of LFW ({len(images.paths):,} images), library protocols (flip on):", flush=True)
    systems = {
        "dlib (Euclidean, as shipped)": dlib_set,
        "faceres (cosine of re-normalised flip template)": faceres_set,
        "faceres (as faceledger eval scores it: un-normalised flip mean)": faceres_lib_set,
        f"fusion w={w_view2:.3f} (median of View-2 fold choices)": fixed_set(
            dlib_set, fused_templates(faceres_unit, dlib_unit, w_view2), COSINE_SCALE
        ),
        f"fusion w={w_halves:.3f} (mean of the halves' choices)": fixed_set(
            dlib_set, fused_templates(faceres_unit, dlib_unit, w_halves), COSINE_SCALE
        ),
    }
    full = {}
    for name, s in systems.items():
        full[name] = library_measures(s, list(labels))
        print_measures(name, full[name])
        print(f"    ({full[name]['seconds']:.0f} s)", flush=True)
    results["all_lfw"] = full
    results["weights"] = {"view2_median": w_view2, "halves_mean": w_halves}

    # -- exact cross-check and an in-sample sweep of the weight
    print("\nAll of LFW, exact (unbinned) TAR at FMR from cosines; fusion weight swept in-sample:", flush=True)
    (cf, cd), all_same = upper_cosines([faceres_unit, dlib_unit], labels)
    people, counts = np.unique(labels, return_counts=True)
    top = int(np.argmax(counts))
    top_pairs = int(counts[top]) * (int(counts[top]) - 1) // 2
    print(
        f"  {int(all_same.sum()):,} mated pairs, {top_pairs:,} ({top_pairs / all_same.sum():.1%}) of them "
        f"{people[top]}'s ({counts[top]} images); {int((~all_same).sum()):,} non-mated"
    )
    shipped = upper_similarity(dlib_set, len(labels))
    points = [exact_point(shipped[all_same], shipped[~all_same], t) for t in FMRS]
    results["dlib_shipped_exact"] = points
    print(
        "  dlib (Euclidean, as shipped), exact: "
        + "  ".join(
            f"FMR {p['target']:.0e} TAR {p['tar']:.4%} ({p['fnmr_errors']:,} miss, {p['fmr_errors']} FM)"
            for p in points
        ),
        flush=True,
    )
    del shipped
    sweep = []
    for w in sorted({*map(float, SWEEP), w_view2, w_halves}):
        fused = fuse(cf, cd, w)
        mated, nonmated = fused[all_same], fused[~all_same]
        points = [exact_point(mated, nonmated, t) for t in FMRS]
        sweep.append({"w": w, "points": points})
        print(
            f"  w {w:.3f}: "
            + "  ".join(
                f"FMR {p['target']:.0e} TAR {p['tar']:.4%} ({p['fnmr_errors']:,} miss, {p['fmr_errors']} FM)"
                for p in points
            ),
            flush=True,
        )
    results["sweep_exact"] = sweep
    results["all_pairs_counts"] = {"mated": int(all_same.sum()), "nonmated": int((~all_same).sum())}
    del cf, cd, all_same

    if not args.skip_timing:
        print("\nEmbedding time at batch 32 (network only, flip off; machine shared, so noisy):", flush=True)
        results["timing"] = timing(args.timing_seconds)
    results["seconds"] = time.perf_counter() - began
    print(f"\nTotal {results['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
