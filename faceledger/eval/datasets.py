"""Labelled face image sets: an identity-per-folder tree, LFW's pairs.txt, identity -> group CSVs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from faceledger.errors import InvalidParameterException
from faceledger.service.folder_index import IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledImages:
    """Images under ``root`` as ``identity/file`` paths, with the identity of each."""

    root: Path
    paths: list[str]
    identities: list[str]


def identity_folders(root: Path, *, limit_identities: int | None = None) -> LabelledImages:
    """``root/IDENTITY/image`` for every image file one level down, sorted."""
    if not root.is_dir():
        raise InvalidParameterException(f"Dataset folder {root} does not exist.")
    paths, identities = [], []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    for folder in folders[:limit_identities]:
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f"{folder.name}/{image.name}")
                identities.append(folder.name)
    if not paths:
        raise InvalidParameterException(f"No images in identity folders under {root}.")
    return LabelledImages(root, paths, identities)


@dataclass(frozen=True)
class Pair:
    fold: int
    first: str
    second: str
    same: bool


def lfw_image(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_lfw_pairs(pairs_file: Path, *, folds: int | None = None, per_fold: int | None = None) -> list[Pair]:
    """LFW View 2 pairs: a header ``folds pairs_per_half``, then per fold that many matched lines
    ``name i j`` and as many mismatched ``name1 i name2 j``. ``folds`` keeps the first few folds,
    ``per_fold`` the first ``per_fold`` matched and mismatched pairs of each (quick runs)."""
    if not pairs_file.is_file():
        raise InvalidParameterException(f"Pairs file {pairs_file} does not exist.")
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    try:
        fold_count, per_half = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError):
        raise InvalidParameterException(f"{pairs_file} does not start with 'FOLDS PAIRS'.") from None
    pairs = []
    for n, fields in enumerate(lines[1:]):
        fold = n // (2 * per_half)
        if fold >= fold_count or (folds is not None and fold >= folds):
            break
        if per_fold is not None and (n % per_half) >= per_fold:
            continue
        if len(fields) == 3:
            pairs.append(Pair(fold, lfw_image(fields[0], fields[1]), lfw_image(fields[0], fields[2]), True))
        elif len(fields) == 4:
            pairs.append(Pair(fold, lfw_image(fields[0], fields[1]), lfw_image(fields[2], fields[3]), False))
        else:
            raise InvalidParameterException(f"{pairs_file} line {n + 2} is not a pair: {' '.join(fields)!r}.")
    return pairs


def read_groups(csv_file: Path, column: str | None = None) -> tuple[str, dict[str, str]]:
    """(group column name, identity -> group) from a CSV whose first column is the identity.
    ``column`` picks the group column (default: the last one). Empty cells are left out."""
    if not csv_file.is_file():
        raise InvalidParameterException(f"Groups file {csv_file} does not exist.")
    with csv_file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if len(fields) < 2:
            raise InvalidParameterException(f"{csv_file} needs an identity column and a group column.")
        column = column or fields[-1]
        if column not in fields:
            raise InvalidParameterException(f"{csv_file} has no column {column!r}; it has {', '.join(fields)}.")
        groups = {row[fields[0]]: row[column].strip() for row in reader if row[column] and row[column].strip()}
    return column, groups
