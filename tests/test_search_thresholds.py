"""Search thresholds that know the gallery: the default keeps the expected false candidates per
search (and so the FPIR) at or under 1% at the collection's size, every search says what its
threshold means, and nothing the calibration did not measure is promised."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from faceledger.service import FaceService
from faceledger.service.search_limits import TARGET_FPIR, default_meaning, fpir_threshold
from faceledger.store import FaceRecord, ImageRecord
from faceledger.vision.calibration import ThresholdRow, ThresholdTable
from faceledger.vision.model import DlibResNetModel

from conftest import image_bytes

LFW = DlibResNetModel().threshold_table()
PROBE = ("facerec_examples", "obama", "obama2.jpg")


def _fill(service: FaceService, collection_id: str, count: int) -> None:
    """``count`` strangers: random templates far from any real face, written straight to the store."""
    rng = np.random.default_rng(5)
    image_id, now = str(uuid.uuid4()), time.time()
    records = []
    for vector in rng.normal(0, 1, (count, 128)).astype(np.float32):
        face_id = str(uuid.uuid4())
        records.append(
            FaceRecord(
                face_id,
                collection_id,
                image_id,
                None,
                "0" * 64,
                {"Width": 0.1, "Height": 0.1, "Left": 0.1, "Top": 0.1},
                99.0,
                {},
                {},
                service.templates.seal(face_id, vector),
                now,
            )
        )
    service.store.add_image(ImageRecord(image_id, collection_id, uuid.uuid4().hex, None, 100, 100, count, now), records)


def test_the_default_rises_with_the_gallery_and_never_falls_below_the_per_comparison_threshold() -> None:
    assert fpir_threshold(LFW, 1, TARGET_FPIR) == (88.5, True)  # FMR <= 1e-4 stays the floor
    assert fpir_threshold(LFW, 100, TARGET_FPIR) == (88.5, True)
    thresholds = [fpir_threshold(LFW, n, TARGET_FPIR)[0] for n in (1_000, 10_000, 100_000)]
    assert thresholds == sorted(thresholds) and thresholds[0] > 88.5
    for n, threshold in zip((1_000, 10_000, 100_000), thresholds, strict=True):
        assert n * LFW.at(threshold).fmr_high <= TARGET_FPIR  # the promise, with 95% confidence
        lower = [r for r in LFW.rows if r.threshold < threshold and r.threshold >= 88.5]
        assert all(n * r.fmr_high > TARGET_FPIR for r in lower)  # and the lowest that keeps it
    beyond, met = fpir_threshold(LFW, 10_000_000, TARGET_FPIR)
    assert not met and beyond == 100.0  # 87 M non-mated pairs cannot show FMR 1e-9
    assert default_meaning(LFW, 10_000_000).status == "TARGET_NOT_MEASURABLE"


def test_a_search_states_what_its_threshold_means_at_the_collection_size(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    _fill(service, "c", 2_000)
    expected = fpir_threshold(LFW, 2_000, TARGET_FPIR)[0]
    assert service.default_search_threshold("c") == expected > 88.5
    described = service.describe_collection(collection_id="c")["FaceledgerSearchThreshold"]
    assert described["Threshold"] == expected and described["TemplatesCompared"] == 2_000
    result = service.search_faces_by_image(collection_id="c", image=image_bytes(*PROBE))
    meaning = result["FaceledgerThreshold"]
    assert meaning["Threshold"] == expected and meaning["Status"] == "WITHIN_TARGET"
    assert meaning["TemplatesCompared"] == 2_000 and meaning["ExpectedFalseCandidatesUpper95"] <= TARGET_FPIR
    assert meaning["FalseMatchRateUpper95"] == LFW.at(expected).fmr_high and meaning["Calibration"] == LFW.source
    entry = list(service.ledger.entries())[-1]
    assert entry.result["Threshold"] == expected and entry.result["ThresholdStatus"] == "WITHIN_TARGET"

    asked = service.search_faces_by_image(collection_id="c", image=image_bytes(*PROBE), face_match_threshold=80)
    meaning = asked["FaceledgerThreshold"]  # a caller's own threshold is honoured, and priced
    assert meaning["Threshold"] == 80 and meaning["Status"] == "ABOVE_TARGET"
    assert meaning["ExpectedFalseCandidatesUpper95"] == pytest.approx(2_000 * LFW.at(80).fmr_high)


def test_a_calibration_too_small_for_the_collection_promises_nothing(service: FaceService) -> None:
    """200,000 non-mated pairs cannot show the FMR 5e-6 that 2,000 faces need at FPIR 1%."""
    rows = tuple(
        ThresholdRow(t, fmr, 0.0, fmr * 1.2 + 1.5e-5, int(fmr * 200_000), fnmr, fnmr * 0.9, fnmr * 1.1, 100)
        for t, fmr, fnmr in ((85.0, 1e-3, 0.05), (88.0, 5e-5, 0.2), (90.0, 0.0, 0.4), (95.0, 0.0, 0.9))
    )
    small = ThresholdTable("my photos", 1_000, 200_000, rows)
    service.create_collection(collection_id="c")
    service.set_threshold_table(collection_id="c", table=small)
    _fill(service, "c", 2_000)
    meaning = service.search_faces_by_image(collection_id="c", image=image_bytes(*PROBE))["FaceledgerThreshold"]
    assert meaning["Status"] == "TARGET_NOT_MEASURABLE" and meaning["Calibration"] == "my photos"
    assert meaning["Threshold"] == 90.0  # the strictest threshold with the smallest measured bound
    assert meaning["ExpectedFalseCandidatesUpper95"] == pytest.approx(2_000 * 1.5e-5)
    described = service.describe_collection(collection_id="c")["FaceledgerSearchThreshold"]
    assert described["Status"] == "TARGET_NOT_MEASURABLE"


def test_a_policy_floor_still_wins(service: FaceService) -> None:
    service.create_collection(collection_id="c")
    service.put_collection_policy(collection_id="c", min_threshold=95.0)
    meaning = service.search_faces_by_image(collection_id="c", image=image_bytes(*PROBE))["FaceledgerThreshold"]
    assert meaning["Threshold"] == 95.0 and meaning["Status"] == "WITHIN_TARGET"


def test_the_search_command_says_what_its_threshold_means(tmp_path) -> None:
    from typer.testing import CliRunner

    from faceledger.cli.main import app

    from conftest import data_path

    data = ["--data-dir", str(tmp_path)]
    runner = CliRunner()
    runner.invoke(app, [*data, "collection", "create", "c"])
    runner.invoke(app, [*data, "index", str(data_path(*PROBE[:2])), "-c", "c"])
    result = runner.invoke(app, [*data, "search", str(data_path(*PROBE)), "-c", "c"])
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and "Threshold 88.5 over" in text
    assert "expected false candidates per search at most" in text and "within the 1% target" in text


def test_a_transfer_margin_multiplies_every_promise_made_from_the_table() -> None:
    import dataclasses

    from faceledger.errors import InvalidParameterException

    wary = dataclasses.replace(LFW, transfer_margin=3.0)
    for n in (1, 1_000, 10_000):
        threshold = fpir_threshold(wary, n, TARGET_FPIR)[0]
        assert threshold >= fpir_threshold(LFW, n, TARGET_FPIR)[0]
        assert n * 3.0 * wary.at(threshold).fmr_high <= TARGET_FPIR
    assert fpir_threshold(wary, 1, TARGET_FPIR)[0] > 88.5  # the per-comparison floor rises too
    meaning = default_meaning(wary, 1_000).to_response()
    assert meaning["TransferMargin"] == 3.0
    assert meaning["FalseMatchRateUpper95"] == pytest.approx(3.0 * LFW.at(meaning["Threshold"]).fmr_high)
    assert ThresholdTable.from_dict(wary.to_dict()) == wary  # kept in the table's JSON
    for bad in (0.5, float("nan"), "x"):
        with pytest.raises(InvalidParameterException):
            ThresholdTable.from_dict({**LFW.to_dict(), "transfer_margin": bad})
