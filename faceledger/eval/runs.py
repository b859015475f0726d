"""The evaluations a user runs: each embeds (or reads from cache), measures, and returns a Report."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceledger.eval import metrics, protocols, report
from faceledger.eval.datasets import LabelledImages, identity_folders, read_groups, read_lfw_pairs
from faceledger.eval.embeddings import EVAL_MODEL, EmbeddedSet, EmbeddingConfig, embed_images
from faceledger.service.search_limits import TARGET_FPIR, fpir_threshold
from faceledger.vision.calibration import RAW_SCORING, SAFE_FMR, ThresholdTable, safe_search_threshold
from faceledger.vision.cohort import SCORING, CohortNorm, scored_similarity
from faceledger.vision.model import FaceModel
from faceledger.vision.onnx_model import UncalibratedModelError

FTA_POLICY = (
    "An image where no face is found gives no template; every comparison with it counts as a "
    "non-match (lowest score): a false non-match when mated, never dropped from any count."
)
PAIR_DEPENDENCE = (
    "Confidence intervals treat comparisons as independent; comparisons sharing images or people "
    "are not, so the true uncertainty is larger than shown."
)


@dataclass(frozen=True)
class EvalOptions:
    """``flip``: average each embedding with that of the mirrored face (test-time augmentation).
    ``face``: which face of an image is the subject, ``centre`` (LFW) or ``largest``.
    ``model``: the face model evaluated, without its own flip augmentation (see
    :class:`EmbeddingConfig`); its threshold table gives the default threshold."""

    flip: bool = True
    face: str = "centre"
    cache_dir: Path | None = None
    workers: int | None = None
    on_progress: Callable[[int, int], None] | None = None
    model: FaceModel = EVAL_MODEL
    cohort: CohortNorm | None = None

    @property
    def scoring(self) -> str:
        return RAW_SCORING if self.cohort is None else SCORING

    def compared(
        self, embedded: EmbeddedSet
    ) -> tuple[EmbeddedSet, Callable[[np.ndarray, np.ndarray], np.ndarray] | None]:
        """The set as pairs are scored: unchanged (the model's Similarity), or with a cohort rows
        ``[unit template | mu | sd]`` and their AS-norm Similarity."""
        if self.cohort is None:
            return embedded, None
        rows = self.cohort.scored_rows(embedded.templates(self.flip))
        return EmbeddedSet(embedded.paths, rows, rows, embedded.found, embedded.similarity), scored_similarity

    def embed(self, root: Path, paths: list[str]) -> EmbeddedSet:
        return embed_images(
            root,
            paths,
            config=EmbeddingConfig(face_choice=self.face, model=self.model),
            cache_dir=self.cache_dir,
            workers=self.workers,
            on_progress=self.on_progress,
        )

    def describe(self) -> str:
        scored = "" if self.cohort is None else f", {SCORING} against a cohort of {len(self.cohort):,} faces"
        return f"{self.model.version}, flip TTA {'on' if self.flip else 'off'}, subject = {self.face} face{scored}"


def _pct(value: float) -> str:
    return f"{value:.3%}"


def verification(
    dataset: Path, pairs_file: Path, options: EvalOptions, *, folds: int | None = None, per_fold: int | None = None
) -> report.Report:
    """LFW View 2: 10-fold accuracy on pairs.txt, and TAR at low FMR over all pairs of its images."""
    started = time.monotonic()
    pairs = read_lfw_pairs(pairs_file, folds=folds, per_fold=per_fold)
    images = sorted({p.first for p in pairs} | {p.second for p in pairs})
    embedded = options.embed(dataset, images)
    result = protocols.verification(embedded, pairs, flip=options.flip)
    identities = [path.split("/")[0] for path in embedded.paths]
    everything, _ = protocols.all_pairs(embedded, identities, flip=options.flip)
    mated, nonmated = result.scores[result.same], result.scores[~result.same]
    eer, eer_threshold = metrics.equal_error_rate(mated, nonmated)
    points = result.operating_points()
    dense = [_dense_point(everything, target) for target in protocols.TARGET_FMRS]
    seconds = time.monotonic() - started

    out = report.Report(f"Verification on {dataset.name} ({len(pairs):,} pairs, {len(result.folds)} folds)")
    out.summary = [
        ("accuracy (mean +/- std over folds)", f"{result.accuracy_mean:.4%} +/- {result.accuracy_std:.4%}"),
        ("equal error rate", f"{_pct(eer)} at similarity {eer_threshold:.2f}"),
        (
            "failures to acquire",
            f"{len(embedded.failures_to_acquire)} of {len(embedded.paths):,} images; "
            f"{result.pairs_with_fta} of {len(pairs):,} pairs involve one",
        ),
        ("pipeline", options.describe()),
        ("run time", f"{seconds:.0f} s"),
    ]
    out.notes = [FTA_POLICY, PAIR_DEPENDENCE]
    if any(not p.resolvable for p in points):
        out.notes.append(
            f"pairs.txt has only {len(nonmated):,} non-mated pairs, too few to measure FMR below "
            f"{1 / len(nonmated):.1e}; the all-pairs table gives those points."
        )
    out.tables.append(
        (
            "Folds",
            ("fold", "threshold", "accuracy"),
            [(f.fold + 1, f.threshold, _pct(f.accuracy)) for f in result.folds],
        )
    )
    out.tables.append(
        (
            "TAR at FMR, pairs.txt",
            ("target FMR", "threshold", "measured FMR", "TAR", "resolvable"),
            [(p.target_fmr, p.threshold, report.rate_text(p.fmr), _pct(p.tar), p.resolvable) for p in points],
        )
    )
    out.tables.append(
        (
            f"TAR at FMR, all pairs of the same images ({everything.mated_total:,} mated, {everything.nonmated_total:,} non-mated)",
            ("target FMR", "threshold", "measured FMR", "TAR"),
            [
                (target, threshold, report.rate_text(fmr), _pct(1 - fnmr.value))
                for target, threshold, fmr, fnmr in dense
            ],
        )
    )
    curve = metrics.error_curve(mated, nonmated)
    out.figures = {
        "ROC": report.roc_figure({"pairs.txt": curve, "all pairs": everything.curve()}),
        "DET": report.det_figure({"pairs.txt": curve, "all pairs": everything.curve()}),
        "score_histogram": report.score_histogram_figure(
            protocols.BIN_LOW + np.arange(protocols.BIN_COUNT) * protocols.BIN_STEP,
            everything.mated,
            everything.nonmated,
            float(np.median([f.threshold for f in result.folds])),
        ),
    }
    out.numbers = {
        "dataset": str(dataset),
        "pairs": len(pairs),
        "options": options.describe(),
        "accuracy_mean": result.accuracy_mean,
        "accuracy_std": result.accuracy_std,
        "folds": [vars(f) for f in result.folds],
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tar_at_fmr_pairs": [p.as_dict() for p in points],
        "tar_at_fmr_all_pairs": [
            {"target_fmr": t, "threshold": th, "fmr": fmr.as_dict(), "tar": 1 - fnmr.value, "fnmr": fnmr.as_dict()}
            for t, th, fmr, fnmr in dense
        ],
        "failures_to_acquire": embedded.failures_to_acquire,
        "pairs_with_fta": result.pairs_with_fta,
        "fta_policy": FTA_POLICY,
        "seconds": seconds,
    }
    return out


def _dense_point(counts: protocols.PairCounts, target: float) -> tuple[float, float, metrics.Rate, metrics.Rate]:
    threshold = counts.threshold_at_fmr(target)
    return target, threshold, counts.fmr(threshold), counts.fnmr(threshold)


def identification(dataset: Path, options: EvalOptions, *, limit_identities: int | None = None) -> report.Report:
    """Open-set 1:N on an identity-folder set (see protocols.identification)."""
    started = time.monotonic()
    images = identity_folders(dataset, limit_identities=limit_identities)
    embedded = options.embed(dataset, images.paths)
    result = protocols.identification(embedded, images.identities, flip=options.flip)
    search = result.search
    try:
        table: ThresholdTable | None = options.model.threshold_table()
    except UncalibratedModelError:  # a model of one's own: no default to measure, the rest holds
        table = None
    # the default a collection of this gallery's size searches with (service/search_limits.py)
    default = fpir_threshold(table, result.gallery_size, TARGET_FPIR)[0] if table is not None else None
    rows = []
    for target in (0.01, 0.001):
        threshold = search.threshold_at_fpir(target)
        rows.append(
            (target, threshold, report.rate_text(search.fpir(threshold)), report.rate_text(search.fnir(threshold)))
        )
    leads = {t: search.fpir(t) for t in (default, 80.0) if t is not None}
    predicted = fpir_predictions(table, result.gallery_size, search) if table is not None else []
    seconds = time.monotonic() - started
    out = report.Report(f"Open-set identification on {dataset.name}")
    out.summary = [
        ("gallery (enrolled people, one image each)", f"{result.gallery_size:,}"),
        ("mated probes / non-mated probes", f"{result.mated_probes:,} / {result.nonmated_probes:,}"),
        ("rank-1 hit rate (no threshold)", _pct(search.rank1_hit_rate)),
        *(
            [
                (
                    f"non-mated probes with any candidate at the default threshold {default:g}",
                    report.rate_text(leads[default]),
                )
            ]
            if default is not None
            else [("default threshold", "none: the model ships no threshold table (faceledger calibrate)")]
        ),
        ("non-mated probes with any candidate at 80", report.rate_text(leads[80.0])),
        ("failures to acquire", f"{len(embedded.failures_to_acquire)} of {len(embedded.paths):,} images"),
        ("pipeline", options.describe()),
        ("run time", f"{seconds:.0f} s"),
    ]
    out.notes = [
        "Enrolled: people with two or more images, each enrolled with their first image that has a face. "
        "Mated probes: their other images. Non-mated probes: images of people with one image, never enrolled.",
        "A non-mated probe with a candidate above the threshold is a false lead handed to a human reviewer.",
        FTA_POLICY,
    ]
    out.tables.append(("FNIR at FPIR (rank 1)", ("target FPIR", "threshold", "FPIR", "FNIR"), rows))
    out.tables += (
        [
            (
                f"FPIR predicted from the threshold table at {result.gallery_size:,} enrolled vs observed ({TARGET_FPIR:g} "
                "target: * marks the default a collection of this size gets)",
                ("threshold", "predicted 1-(1-FMR)^N", "bound N x FMR upper 95%", "observed FPIR", "FNIR"),
                [
                    (
                        f"{t:g}" + (" *" if default_here else ""),
                        f"{p:.3%}",
                        f"{b:.3%}",
                        report.rate_text(o),
                        report.rate_text(n),
                    )
                    for t, default_here, p, b, o, n in predicted
                ],
            )
        ]
        if predicted
        else []
    )
    out.numbers = {
        "dataset": str(dataset),
        "options": options.describe(),
        "gallery": result.gallery_size,
        "mated_probes": result.mated_probes,
        "nonmated_probes": result.nonmated_probes,
        "rank1_hit_rate": search.rank1_hit_rate,
        "fnir_at_fpir": [{"target_fpir": t, "threshold": th, "fpir": f, "fnir": n} for t, th, f, n in rows],
        "nonmated_with_candidate": {str(t): rate.as_dict() for t, rate in leads.items()},
        "default_threshold": default,
        "fpir_predicted_vs_observed": [
            {
                "threshold": t,
                "default_at_this_size": d,
                "predicted": p,
                "bound": b,
                "observed": o.as_dict(),
                "fnir": n.as_dict(),
            }
            for t, d, p, b, o, n in predicted
        ],
        "seconds": seconds,
    }
    return out


def fpir_predictions(
    table: ThresholdTable, gallery: int, search: metrics.OpenSetResult
) -> list[tuple[float, bool, float, float, metrics.Rate, metrics.Rate]]:
    """For the default threshold at this gallery size and a few around it: (threshold, whether it
    is that default, FPIR predicted from the table's FMR as 1-(1-FMR)^N, the bound N x FMR upper,
    observed FPIR, FNIR). On the data the table was measured on, the prediction is in-sample."""
    default = fpir_threshold(table, gallery, TARGET_FPIR)[0]
    lowest, highest = table.rows[0].threshold, table.rows[-1].threshold
    around = (default + step for step in (-1.5, -0.5, 0.5, 1.5, 2.5))
    chosen = sorted({safe_search_threshold(table), default, *(t for t in around if lowest <= t <= highest)})
    out = []
    for threshold in chosen:
        row = table.at(threshold)
        out.append(
            (
                threshold,
                threshold == default,
                1 - (1 - row.fmr) ** gallery,
                min(1.0, gallery * table.bound(row)),
                search.fpir(threshold),
                search.fnir(threshold),
            )
        )
    return out


def groups(
    dataset: Path,
    groups_csv: Path,
    options: EvalOptions,
    *,
    column: str | None = None,
    threshold: float | None = None,
    limit_identities: int | None = None,
) -> report.Report:
    """FMR and FNMR within each group at the operating threshold, with intervals and counts."""
    started = time.monotonic()
    column, group_of = read_groups(groups_csv, column)
    images = identity_folders(dataset, limit_identities=limit_identities)
    if threshold is None:  # decided before the (long) embedding: a model without a table needs one given
        try:
            threshold = safe_search_threshold(options.model.threshold_table())
        except UncalibratedModelError as error:
            raise UncalibratedModelError(f"{error.message} Or give the operating threshold (--threshold).") from None
    embedded = options.embed(dataset, images.paths)
    _, per_group = protocols.all_pairs(embedded, images.identities, flip=options.flip, groups=group_of)
    fmr = {g: c.fmr(threshold) for g, c in per_group.items()}
    fnmr = {g: c.fnmr(threshold) for g, c in per_group.items()}
    people = {g: sum(1 for identity in set(images.identities) if group_of.get(identity) == g) for g in per_group}
    out = report.Report(f"Error rates by {column} on {dataset.name} at similarity {threshold:g}")
    out.summary = [
        ("operating threshold", f"{threshold:g}"),
        ("FMR max/min ratio across groups", _ratio(fmr)),
        ("FNMR max/min ratio across groups", _ratio(fnmr)),
        ("pipeline", options.describe()),
        ("run time", f"{time.monotonic() - started:.0f} s"),
    ]
    out.notes = [
        "FMR per group counts non-mated pairs whose two people are both in the group; FNMR counts "
        "mated pairs of the group's people. People without a group label are left out of both.",
        f"Groups come from {groups_csv.name} ({column}); they are labels assigned by others, not self-identification.",
        PAIR_DEPENDENCE,
        *_over_target(fmr, threshold),
        *_width_warnings("FMR", fmr),
        *_width_warnings("FNMR", fnmr),
    ]
    out.tables.append(
        (
            "Per group",
            ("group", "people", "FMR [95%] (errors of comparisons)", "FNMR [95%] (errors of comparisons)"),
            [(g, people[g], report.rate_text(fmr[g]), report.rate_text(fnmr[g])) for g in per_group],
        )
    )
    out.figures = {
        "FMR_by_group": report.group_bars_figure(f"FMR at {threshold:g}", fmr),
        "FNMR_by_group": report.group_bars_figure(f"FNMR at {threshold:g}", fnmr),
    }
    out.numbers = {
        "dataset": str(dataset),
        "groups_file": str(groups_csv),
        "column": column,
        "threshold": threshold,
        "options": options.describe(),
        "groups": {g: {"people": people[g], "fmr": fmr[g].as_dict(), "fnmr": fnmr[g].as_dict()} for g in per_group},
        "fmr_ratio": _ratio_value(fmr),
        "fnmr_ratio": _ratio_value(fnmr),
    }
    return out


def _ratio_value(rates: dict[str, metrics.Rate]) -> float | None:
    """Highest over lowest rate among the groups with at least one error (a group without any
    error has no measured rate to divide by)."""
    values = [r.value for r in rates.values() if r.errors > 0]
    return max(values) / min(values) if len(values) >= 2 else None


def _ratio(rates: dict[str, metrics.Rate]) -> str:
    ratio = _ratio_value(rates)
    left_out = [g for g, r in rates.items() if r.errors == 0]
    if ratio is None:
        return "undefined (fewer than two groups with errors)"
    return f"{ratio:.2f}" + (f" (without {', '.join(left_out)}: no errors)" if left_out else "")


def _over_target(fmr: dict[str, metrics.Rate], threshold: float) -> list[str]:
    return [
        f"At {threshold:g}, group {group!r} has FMR {rate.value:.2e} (95% interval from {rate.interval[0]:.2e}): "
        f"above the {SAFE_FMR:g} that this threshold keeps overall. Searches of mostly {group!r} people "
        f"get more false candidates; consider a higher threshold for them."
        for group, rate in fmr.items()
        if rate.trials and rate.interval[0] > SAFE_FMR
    ]


def _width_warnings(name: str, rates: dict[str, metrics.Rate]) -> list[str]:
    warnings = []
    for group, rate in rates.items():
        low, high = rate.interval
        if rate.trials == 0:
            warnings.append(f"Group {group!r} has no {name} comparisons: nothing can be said about it.")
        elif rate.errors < 10 or (low > 0 and high / low > 3) or low == 0:
            warnings.append(
                f"{name} of group {group!r} rests on {rate.errors} error(s) in {rate.trials:,} comparisons: "
                f"its 95% interval [{low:.3%}, {high:.3%}] is too wide to conclude whether it differs from the other groups."
            )
    return warnings


def calibrate(
    dataset: Path, options: EvalOptions, *, limit_identities: int | None = None
) -> tuple[ThresholdTable, report.Report]:
    """A threshold table from every pair of a ``DIR/identity/images`` tree."""
    images: LabelledImages = identity_folders(dataset, limit_identities=limit_identities)
    embedded = options.embed(dataset, images.paths)
    compared, score = options.compared(embedded)
    counts, _ = protocols.all_pairs(compared, images.identities, flip=options.flip, score=score)
    people = len(set(images.identities))
    table = counts.threshold_table(
        f"{dataset.name}: {len(images.paths):,} images of {people:,} people, all pairs ({options.describe()})",
        protocols.TABLE_THRESHOLDS,
        options.scoring,
    )
    if options.cohort is not None:  # it holds for cohorts at least this large
        table = dataclasses.replace(table, cohort_faces=len(options.cohort))
    out = report.Report(f"Calibration on {dataset.name}")
    try:
        safe = f"{table.threshold_for_fmr(SAFE_FMR):g}"
    except Exception:  # noqa: BLE001 - reported as a finding, not a crash
        safe = "none: too few non-mated pairs to show FMR <= 1e-4"
    out.summary = [
        ("images / people", f"{len(images.paths):,} / {people:,}"),
        ("mated / non-mated comparisons", f"{table.mated:,} / {table.nonmated:,}"),
        ("safe search threshold (FMR <= 1e-4, 95% upper bound)", safe),
        ("failures to acquire", f"{len(embedded.failures_to_acquire)}"),
    ]
    out.notes = [FTA_POLICY, PAIR_DEPENDENCE]
    if table.nonmated < 38_415:
        out.notes.append(
            f"Only {table.nonmated:,} non-mated comparisons: even with no false match, the 95% upper bound of "
            "FMR stays above 1e-4 (it needs about 38,400). Add more people to calibrate low error rates."
        )
    out.tables.append(
        (
            "Threshold table",
            ("threshold", "FMR", "FMR 95%", "FNMR", "FNMR 95%"),
            [
                (
                    r.threshold,
                    r.fmr,
                    f"[{r.fmr_low:.2e}, {r.fmr_high:.2e}]",
                    r.fnmr,
                    f"[{r.fnmr_low:.2e}, {r.fnmr_high:.2e}]",
                )
                for r in table.rows
            ],
        )
    )
    out.numbers = table.to_dict()
    return table, out
