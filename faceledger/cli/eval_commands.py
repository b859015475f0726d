"""``faceledger eval ...``, ``faceledger calibrate`` and ``faceledger thresholds``: measuring
accuracy and stating what each threshold means."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from faceledger.cli import render
from faceledger.cli.common import CliState, JsonOption, command_group, open_service, reports_errors
from faceledger.config import default_data_dir
from faceledger.errors import InvalidParameterException
from faceledger.service.search_limits import TARGET_FPIR, default_meaning
from faceledger.vision.calibration import RAW_SCORING, SAFE_FMR, ThresholdTable, safe_search_threshold

eval_app = command_group(
    help="Measure accuracy on labelled data: verification, 1:N search, groups.", no_args_is_help=True
)

DatasetOption = Annotated[
    Path, typer.Option("--dataset", help="Folder of identity folders (LFW layout: NAME/NAME_0001.jpg).")
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="Report folder (report.html, results.json, PNGs); default DATA_DIR/reports/NAME."),
]
FlipOption = Annotated[bool, typer.Option("--flip/--no-flip", help="Average each embedding with its mirror image's.")]
CacheOption = Annotated[
    Path | None, typer.Option("--cache-dir", help="Embedding cache (default ~/.cache/faceledger/eval).")
]
WorkersOption = Annotated[int | None, typer.Option("--workers", help="Embedding processes (default: one per core).")]
LimitOption = Annotated[int | None, typer.Option("--limit-identities", help="Use only the first N identity folders.")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Measure this face model ('faceledger models list'; default: the default)."),
]


def _as_evaluated(model: Any) -> Any:
    """``model`` as the evaluations run it: they mirror chips themselves (--flip), and run one
    network thread per worker."""
    return dataclasses.replace(model, flip=False, threads=1)


def _named_model(name: str | None) -> Any:
    """The registered model ``name`` as the evaluations run it, or None for the default."""
    if name is None:
        return None
    with open_service() as service:
        return _as_evaluated(service.models.named(name))


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    progress = Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=render.errors,
        disable=not enabled,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task("embedding", total=total)
        progress.update(task, completed=done)

    with progress:
        yield update


def _options(
    flip: bool,
    face: str,
    cache_dir: Path | None,
    workers: int | None,
    on_progress: Callable[[int, int], None],
    model: Any = None,
) -> Any:
    from faceledger.eval.runs import EvalOptions

    options = EvalOptions(flip=flip, face=face, cache_dir=cache_dir, workers=workers, on_progress=on_progress)
    return options if model is None else dataclasses.replace(options, model=model)


def _evaluate(
    name: str,
    run: Callable[[Any], Any],
    *,
    flip: bool,
    face: str,
    cache_dir: Path | None,
    workers: int | None,
    out: Path | None,
    as_json: bool,
    model: Any = None,
) -> Any:
    """Run an evaluation with a progress bar, write its report and print it; returns what
    ``run`` returned. ``model``: the face model to measure (default: the shipped one)."""
    with _progress(not as_json) as update:
        outcome = run(_options(flip, face, cache_dir, workers, update, model))
    _finish(outcome[1] if isinstance(outcome, tuple) else outcome, out, name, as_json)
    return outcome


def _finish(result: Any, out: Path | None, default_name: str, as_json: bool) -> None:
    # generated output goes beside the data, never into whatever source tree the command runs in
    folder = out or (CliState.data_dir or default_data_dir()) / "reports" / default_name
    page = result.write(folder)
    if as_json:
        render.print_json(result.numbers)
        return
    render.table(result.title, ("", ""), result.summary)
    for note in result.notes:
        render.console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for caption, header, rows in result.tables:
        render.table(caption, header, [[render_cell(v) for v in row] for row in rows])
    render.console.print(f"Report: {page}")


def render_cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@eval_app.command("verification")
@reports_errors
def eval_verification(
    dataset: DatasetOption,
    pairs: Annotated[
        Path | None, typer.Option(help="pairs.txt (default: DATASET/../lfw_meta/pairs.txt or DATASET/pairs.txt).")
    ] = None,
    folds: Annotated[int | None, typer.Option(help="Use only the first N folds (quick runs).")] = None,
    per_fold: Annotated[
        int | None, typer.Option(help="Use only the first N matched and N mismatched pairs of each fold.")
    ] = None,
    flip: FlipOption = True,
    out: OutOption = None,
    cache_dir: CacheOption = None,
    workers: WorkersOption = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """LFW verification: 10-fold accuracy, ROC/DET, TAR at FMR 1e-2/1e-3/1e-4, FTA."""
    from faceledger.eval import runs

    pairs = pairs or next(
        (p for p in (dataset.parent / "lfw_meta" / "pairs.txt", dataset / "pairs.txt") if p.exists()),
        dataset / "pairs.txt",
    )
    _evaluate(
        "verification",
        lambda options: runs.verification(dataset, pairs, options, folds=folds, per_fold=per_fold),
        flip=flip,
        face="centre",
        cache_dir=cache_dir,
        workers=workers,
        out=out,
        as_json=as_json,
        model=_named_model(model),
    )


@eval_app.command("identification")
@reports_errors
def eval_identification(
    dataset: DatasetOption,
    limit_identities: LimitOption = None,
    flip: FlipOption = True,
    out: OutOption = None,
    cache_dir: CacheOption = None,
    workers: WorkersOption = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open-set 1:N: FNIR at FPIR 0.01 and 0.001, rank-1 hit rate, false leads at the default threshold."""
    from faceledger.eval import runs

    _evaluate(
        "identification",
        lambda options: runs.identification(dataset, options, limit_identities=limit_identities),
        flip=flip,
        face="centre",
        cache_dir=cache_dir,
        workers=workers,
        out=out,
        as_json=as_json,
        model=_named_model(model),
    )


@eval_app.command("groups")
@reports_errors
def eval_groups(
    dataset: DatasetOption,
    groups: Annotated[Path, typer.Option("--groups", help="CSV: identity in the first column, group in another.")],
    column: Annotated[str | None, typer.Option(help="Group column (default: the last).")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Operating threshold (default: the safe search threshold).")
    ] = None,
    limit_identities: LimitOption = None,
    flip: FlipOption = True,
    out: OutOption = None,
    cache_dir: CacheOption = None,
    workers: WorkersOption = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """FMR and FNMR per group with 95% intervals, the max/min ratio, and warnings where data is thin."""
    from faceledger.eval import runs

    _evaluate(
        "groups",
        lambda options: runs.groups(
            dataset, groups, options, column=column, threshold=threshold, limit_identities=limit_identities
        ),
        flip=flip,
        face="centre",
        cache_dir=cache_dir,
        workers=workers,
        out=out,
        as_json=as_json,
        model=_named_model(model),
    )


@reports_errors
def calibrate(
    dataset: DatasetOption,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Store the table for this collection.")
    ] = None,
    face: Annotated[str, typer.Option(help="Subject face of each image: largest or centre.")] = "largest",
    limit_identities: LimitOption = None,
    flip: FlipOption = True,
    out: OutOption = None,
    cache_dir: CacheOption = None,
    workers: WorkersOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure FMR/FNMR per threshold on your own labelled folder (DIR/identity/images); with
    --collection, searches of that collection then default to its safe threshold."""
    from faceledger.eval import runs

    model = cohort = None
    if collection is not None:  # measured as the collection is searched: its model, and its cohort if any
        with open_service() as service:
            model = _as_evaluated(service.models.for_collection(collection).model)
            named = service.cohorts.for_search(collection)
            cohort = named.norm if named is not None else None
    table, _ = _evaluate(
        "calibration",
        lambda options: runs.calibrate(
            dataset, dataclasses.replace(options, cohort=cohort), limit_identities=limit_identities
        ),
        flip=flip,
        face=face,
        cache_dir=cache_dir,
        workers=workers,
        out=out,
        as_json=as_json,
        model=model,
    )
    if collection is not None:
        safe_search_threshold(table)  # refuses a table too small to show FMR <= 1e-4
        with open_service() as service:
            service.store.require_collection(collection)
            service.set_threshold_table(collection_id=collection, table=table)
        render.errors.print(
            f"Stored for collection {collection}: its searches now default to {safe_search_threshold(table):g} or "
            "higher as it grows (see 'faceledger thresholds --collection')."
        )


@reports_errors
def thresholds(
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Show this collection's table, at its size.")
    ] = None,
    faces: Annotated[
        int | None,
        typer.Option(min=0, help="Gallery size to show false candidates per search for (default: the collection's)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Show the table shipped with this face model ('models list').")
    ] = None,
    every: Annotated[float, typer.Option(help="Show every Nth similarity step (the table has 0.5 steps).")] = 2.5,
    as_json: JsonOption = False,
) -> None:
    """What each similarity threshold means: measured FMR and FNMR with 95% intervals, and the
    false candidates a search of a gallery of that size returns (default: the default model's
    table)."""
    if collection is not None and model is not None:
        raise InvalidParameterException("Give --collection or --model, not both.")
    size = faces
    if collection is not None:
        with open_service() as service:
            size = faces if faces is not None else service.describe_collection(collection_id=collection)["FaceCount"]
            table: ThresholdTable = service.threshold_table(collection)
    elif model is not None:
        with open_service() as service:
            table = service.models.named(model).threshold_table()
    else:
        from faceledger.vision.model import DlibResNetModel

        table = DlibResNetModel().threshold_table()
    default = default_meaning(table, size or 1)
    if as_json:
        render.print_json(
            {
                **table.to_dict(),
                "safe_threshold": safe_search_threshold(table),
                "faces": size,
                "default_search_threshold": default.to_response(),
            }
        )
        return
    rows = [
        [
            f"{r.threshold:g}" + (" *" if r.threshold == default.threshold else ""),
            f"{r.fmr:.2e}",
            f"[{r.fmr_low:.1e}, {r.fmr_high:.1e}]",
            f"{r.false_matches:,}",
            f"{r.fnmr:.2%}",
            f"[{r.fnmr_low:.2%}, {r.fnmr_high:.2%}]",
            *([f"{size * table.bound(r):.3g}"] if size is not None else []),
        ]
        for r in table.rows
        if abs(r.threshold / every - round(r.threshold / every)) < 1e-9 or r.threshold == default.threshold
    ]
    columns: tuple[str, ...] = ("Similarity", "FMR", "FMR 95%", "false matches", "FNMR", "FNMR 95%")
    if size is not None:
        columns += (f"false candidates per search at {size:,} faces (95% upper)",)
    render.table(table.source, columns, rows)
    at_size = f" at {size:,} faces" if size is not None else " (one face)"
    resolvable = TARGET_FPIR / min(table.bound(r) for r in table.rows)
    margin = f", times a transfer margin of {table.transfer_margin:g} for photos unlike the calibration's" * (
        table.transfer_margin != 1.0
    )
    render.console.print(
        f"* Default search threshold{at_size}: {default.threshold:g} ({default.status}): the lowest whose FMR "
        f"(95% upper bound{margin}) times the faces searched is at most {TARGET_FPIR:g} false candidates per search, and "
        f"never below {safe_search_threshold(table):g} (FMR <= {SAFE_FMR:g}). Measured on {table.mated:,} mated "
        f"and {table.nonmated:,} non-mated comparisons: beyond about {resolvable:,.0f} faces this table cannot "
        "keep that promise; calibrate on more non-mated pairs ('faceledger calibrate').",
        highlight=False,
    )
    if table.scoring != RAW_SCORING:
        render.console.print(
            f"Scores are {table.scoring}: Similarity after normalisation against a cohort (docs/accuracy.md); the "
            f"table holds for cohorts of {table.cohort_faces or 'any number of'} faces or more.",
            highlight=False,
        )
