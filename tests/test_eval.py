"""Evaluations end to end on small real subsets, and the threshold table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.eval import protocols
from faceledger.eval.embeddings import CACHE_FORMAT, EmbeddingConfig
from faceledger.eval.metrics import false_match_rate, false_non_match_rate
from faceledger.eval.runs import EvalOptions, verification
from faceledger.vision import DlibResNetModel
from faceledger.vision.blazeface import BlazeFaceDetector
from faceledger.vision.calibration import SAFE_FMR, ThresholdTable, safe_search_threshold
from faceledger.vision.similarity import SimilarityScale

from conftest import data_path

runner = CliRunner()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


def _counts(mated: np.ndarray, nonmated: np.ndarray) -> protocols.PairCounts:
    counts = protocols.PairCounts()
    counts.add(
        np.concatenate([mated, nonmated]), np.concatenate([np.ones(len(mated), bool), np.zeros(len(nonmated), bool)])
    )
    return counts


def test_binned_counts_equal_exact_rates_at_bin_edges() -> None:
    rng = np.random.default_rng(3)
    mated = np.round(rng.normal(90, 4, 5000), 2)
    nonmated = np.round(rng.normal(40, 15, 20000), 2)
    counts = _counts(mated, np.concatenate([nonmated, [-np.inf] * 10]))
    for threshold in (50.0, 75.5, 80.0, 88.25, 95.0):
        assert counts.fmr(threshold).errors == false_match_rate(nonmated, threshold).errors
        assert counts.fmr(threshold).trials == len(nonmated) + 10  # missing templates stay counted
        assert counts.fnmr(threshold) == false_non_match_rate(mated, threshold)
    threshold = counts.threshold_at_fmr(1e-3)
    assert counts.fmr(threshold).value <= 1e-3 < counts.fmr(threshold - 0.01).value


def test_threshold_table_round_trips_and_maps_both_ways() -> None:
    rng = np.random.default_rng(5)
    counts = _counts(rng.normal(90, 4, 20000), rng.normal(40, 12, 400000))
    table = counts.threshold_table("synthetic", protocols.TABLE_THRESHOLDS)
    assert ThresholdTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    fmrs = [row.fmr for row in table.rows]
    assert fmrs == sorted(fmrs, reverse=True)
    safe = table.threshold_for_fmr(1e-4)
    assert table.at(safe).fmr_high <= 1e-4
    previous = [row for row in table.rows if row.threshold < safe][-1]
    assert previous.fmr_high > 1e-4  # the lowest such threshold
    assert table.at(safe + 0.3) == table.at(safe)  # between rows: the row below, never understating FMR
    assert table.threshold_for_fmr(1e-2, upper_bound=False) <= table.threshold_for_fmr(1e-2)


def shipped_table() -> ThresholdTable:
    return DlibResNetModel().threshold_table()


def test_shipped_table_and_the_default_search_threshold() -> None:
    table = shipped_table()
    safe = safe_search_threshold(table)
    assert table.nonmated > 10_000_000 and table.mated > 100_000
    assert table.at(safe).fmr_high <= SAFE_FMR
    assert table.at(80.0).fmr > table.at(safe).fmr
    assert 80.0 < safe < 95.0


def test_collection_calibration_sets_its_default_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    strict = _counts(rng.normal(95, 2, 20000), np.minimum(rng.normal(60, 12, 400000), 91.0)).threshold_table(
        "synthetic strict", protocols.TABLE_THRESHOLDS
    )
    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
        shipped_default = service.default_search_threshold("c")
        service.set_threshold_table(collection_id="c", table=strict)
        assert service.default_search_threshold("c") == strict.threshold_for_fmr(SAFE_FMR) != shipped_default
        assert faceledger.open(tmp_path).threshold_table("c") == strict


def test_the_cache_key_follows_the_model_and_keeps_existing_caches(tmp_path: Path) -> None:
    default = EmbeddingConfig(face_choice="centre")
    # the key of the caches written before the model had an interface: still found
    before = json.dumps([CACHE_FORMAT, str(tmp_path.resolve()), "centre", "dlib-resnet-v1", BlazeFaceDetector().name])
    assert default.key(tmp_path) == hashlib.sha256(before.encode()).hexdigest()[:24]
    assert default.model.version == "dlib-resnet-v1"  # the evaluation mirrors chips itself
    with_flip = EmbeddingConfig(face_choice="centre", model=DlibResNetModel(flip=True))
    assert with_flip.key(tmp_path) != default.key(tmp_path)
    # the runtime and its threads do not change an embedding, so they share the cache
    reference_runtime = DlibResNetModel(runtime="dlib", flip=False)
    assert EmbeddingConfig(face_choice="centre", model=reference_runtime).key(tmp_path) == default.key(tmp_path)


def test_scores_use_the_models_similarity_scale() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 8)), rng.normal(size=(4, 8))
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    for scale in (DlibResNetModel.similarity, SimilarityScale(reference_distance=2.0, reference_similarity=50.0)):
        np.testing.assert_allclose(protocols.similarity_matrix(a, b, scale), 100.0 - scale.slope * squared)
    scale = SimilarityScale(reference_distance=2.0, reference_similarity=50.0)
    assert protocols.similarity_matrix(a[:1], a[:1], scale)[0, 0] == pytest.approx(100.0)
    assert scale.from_distance(2.0) == pytest.approx(50.0)


def test_verification_on_two_small_folds(tmp_path: Path, cache_dir: Path) -> None:
    lfw = data_path("lfw")
    report = verification(
        lfw, data_path("lfw_meta", "pairs.txt"), EvalOptions(cache_dir=cache_dir, workers=2), folds=2, per_fold=30
    )
    numbers = report.numbers
    assert numbers["pairs"] == 120
    assert [f["fold"] for f in numbers["folds"]] == [0, 1]
    assert numbers["accuracy_mean"] >= 0.95
    assert len(numbers["tar_at_fmr_pairs"]) == 3 and not numbers["tar_at_fmr_pairs"][-1]["resolvable"]
    page = report.write(tmp_path / "report")
    assert "ROC" in page.read_text() and (tmp_path / "report" / "DET.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "results.json").read_text())["pairs"] == 120


def test_identification_and_groups_from_the_command_line(tmp_path: Path, cache_dir: Path) -> None:
    lfw = str(data_path("lfw"))
    common = ["--limit-identities", "60", "--cache-dir", str(cache_dir), "--workers", "2", "--json"]
    result = runner.invoke(app, ["eval", "identification", "--dataset", lfw, "--out", str(tmp_path / "id"), *common])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["gallery"] > 5 and numbers["mated_probes"] > 20 and numbers["nonmated_probes"] > 20
    assert numbers["rank1_hit_rate"] > 0.9
    assert (tmp_path / "id" / "report.html").exists()
    predicted = numbers["fpir_predicted_vs_observed"]  # what the table promises, against what happened
    assert [p["threshold"] for p in predicted if p["default_at_this_size"]] == [numbers["default_threshold"]]
    assert all(0 <= p["predicted"] <= p["bound"] <= 1 for p in predicted)

    groups_csv = str(data_path("lfw_meta", "lfw_gender_per_identity.csv"))
    result = runner.invoke(
        app, ["eval", "groups", "--dataset", lfw, "--groups", groups_csv, "--out", str(tmp_path / "groups"), *common]
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert {"F", "M"} <= set(numbers["groups"]) and numbers["column"] == "gender_majority"
    html = (tmp_path / "groups" / "report.html").read_text()
    assert "too wide to conclude" in html  # 60 people cannot support a comparison, and it says so


def test_calibrate_refuses_to_store_a_table_too_small_to_trust(tmp_path: Path, cache_dir: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    runner.invoke(app, [*data, "collection", "create", "c"])
    result = runner.invoke(
        app,
        [
            *data,
            "calibrate",
            "--dataset",
            str(data_path("deepface_unit")),
            "--collection",
            "c",
            "--cache-dir",
            str(cache_dir),
            "--workers",
            "2",
            "--out",
            str(tmp_path / "cal"),
        ],
    )
    assert result.exit_code == 2
    assert "too few non-mated comparisons" in result.stderr
    assert "about 38,400" in (tmp_path / "cal" / "report.html").read_text()
    with faceledger.open(tmp_path / "data") as service:
        assert service.store.threshold_table("c") is None


def test_thresholds_command_prints_the_shipped_table() -> None:
    result = runner.invoke(app, ["thresholds", "--json"])
    assert result.exit_code == 0
    table = json.loads(result.stdout)
    assert table["safe_threshold"] == safe_search_threshold(shipped_table())
    human = runner.invoke(app, ["thresholds"])
    text = " ".join(human.stdout.split())
    assert f"Default search threshold (one face): {safe_search_threshold(shipped_table()):g}" in text


def test_thresholds_command_prices_each_threshold_at_a_gallery_size(tmp_path: Path) -> None:
    result = runner.invoke(app, ["thresholds", "--faces", "10000", "--json"])
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    default = numbers["default_search_threshold"]
    assert numbers["faces"] == 10_000 and default["Threshold"] > numbers["safe_threshold"] == 88.5
    assert default["Status"] == "WITHIN_TARGET" and default["ExpectedFalseCandidatesUpper95"] <= 0.01
    human = runner.invoke(app, ["thresholds", "--faces", "10000"])
    assert f"Default search threshold at 10,000 faces: {default['Threshold']:g}" in " ".join(human.stdout.split())
    data = ["--data-dir", str(tmp_path)]
    runner.invoke(app, [*data, "collection", "create", "c"])
    empty = json.loads(runner.invoke(app, [*data, "thresholds", "--collection", "c", "--json"]).stdout)
    assert empty["faces"] == 0 and empty["default_search_threshold"]["Threshold"] == 88.5


def test_thresholds_refuses_a_negative_gallery() -> None:
    result = runner.invoke(app, ["thresholds", "--faces", "-5"])
    assert result.exit_code == 2 and "greater than or equal to 0" in " ".join(result.output.split())


def test_thresholds_shows_a_named_models_shipped_table(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    named = runner.invoke(app, [*data, "thresholds", "--model", "dlib-resnet-v1", "--faces", "1000", "--json"])
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout) == json.loads(
        runner.invoke(app, ["thresholds", "--faces", "1000", "--json"]).stdout
    )
    unknown = runner.invoke(app, [*data, "thresholds", "--model", "nope"])
    assert unknown.exit_code == 2 and "No face model 'nope'" in unknown.output
    both = runner.invoke(app, [*data, "thresholds", "--model", "dlib-resnet-v1", "--collection", "c"])
    assert both.exit_code == 2 and "not both" in both.output
