"""Bulk indexing with worker processes gives what one process gives, in file order, and an
interruption keeps only whole images."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import faceledger
from faceledger.errors import InvalidParameterException
from faceledger.service import Outcome, find_image_files, index_files

from conftest import data_path, interrupt_index_faces_on_call


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (one to six faces each), a corrupt JPEG and a text file named .png."""
    root = tmp_path_factory.mktemp("photos")
    shutil.copytree(data_path("facerec_examples"), root / "facerec")
    for name in ("facenetpt_multiface.jpg", "deepface_couple.jpg"):
        shutil.copy(data_path("detection_multi", "images", name), root / name)
    (root / "broken.jpg").write_bytes(data_path("facerec_examples", "obama", "obama.jpg").read_bytes()[:600])
    (root / "fake.png").write_text("not an image")
    return root


def index_all(data_dir: Path, root: Path, workers: int, *, ray: bool = False) -> tuple[list, dict[tuple, np.ndarray]]:
    """Outcomes, and each stored embedding keyed by (image file, face box)."""
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id="c")
        results = list(index_files(service, "c", root, find_image_files(root), workers=workers, ray=ray))
        faces = [face for _, face in service.store.list_faces("c", limit=4096)]
    return results, {
        (f.external_image_id, tuple(sorted(f.bounding_box.items()))): service.templates.embedding(f) for f in faces
    }


@pytest.mark.parametrize("ray", [False, True], ids=["processes", "ray"])
def test_workers_give_the_same_outcomes_and_faces_in_file_order(
    tmp_path: Path, folder: Path, ray: bool, new_store
) -> None:
    alone, alone_faces = index_all(tmp_path / "one", folder, workers=1)
    new_store()
    parallel, parallel_faces = index_all(tmp_path / "two", folder, workers=2, ray=ray)
    summary = [(r.path, r.outcome, r.faces_indexed, r.faces_unindexed) for r in alone]
    assert [(r.path, r.outcome, r.faces_indexed, r.faces_unindexed) for r in parallel] == summary
    assert [r.path for r in parallel] == find_image_files(folder)
    outcomes = {r.path.name: r.outcome for r in parallel}
    assert outcomes["broken.jpg"] is Outcome.UNREADABLE and outcomes["fake.png"] is Outcome.UNREADABLE
    assert outcomes["facenetpt_multiface.jpg"] is Outcome.INDEXED
    assert sum(r.faces_indexed for r in parallel) >= 20
    assert parallel_faces.keys() == alone_faces.keys()
    assert len(alone_faces) == sum(r.faces_indexed for r in alone)
    for key, embedding in alone_faces.items():  # batched across images or not, the same templates
        assert np.abs(parallel_faces[key] - embedding).max() < 1e-5


@pytest.mark.parametrize("ray", [False, True], ids=["processes", "ray"])
def test_interrupted_parallel_run_keeps_whole_images_and_resumes(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, ray: bool, new_store
) -> None:
    files = find_image_files(folder)
    with faceledger.open(tmp_path / "data") as service:
        service.create_collection(collection_id="c")
        interrupt_index_faces_on_call(monkeypatch, 5)
        done = []
        with pytest.raises(KeyboardInterrupt):
            for result in index_files(service, "c", folder, files, workers=2, ray=ray):
                done.append(result)
        monkeypatch.undo()
        kept = service.describe_collection(collection_id="c")["FaceCount"]
        assert kept == sum(r.faces_indexed for r in done)

        rest = list(index_files(service, "c", folder, files, workers=2, ray=ray))
        assert sum(r.outcome is Outcome.SKIPPED for r in rest) == sum(
            r.outcome in (Outcome.INDEXED, Outcome.NO_FACE) for r in done
        )
        new_store()
        expected, _ = index_all(tmp_path / "fresh", folder, workers=1)
        total = service.describe_collection(collection_id="c")["FaceCount"]
        assert total == sum(r.faces_indexed for r in expected)  # every face exactly once


@pytest.mark.parametrize("workers", [1, 2])
def test_files_over_the_limits_are_reported_not_indexed(tmp_path: Path, folder: Path, workers: int) -> None:
    from faceledger.config import ImageLimits

    limits = ImageLimits(max_bytes=900_000, max_pixels=2_500_000)
    with faceledger.open(tmp_path / "data", image_limits=limits) as service:
        service.create_collection(collection_id="c")
        results = {r.path.name: r for r in index_files(service, "c", folder, find_image_files(folder), workers=workers)}
        stored = {face.external_image_id for _, face in service.store.list_faces("c", limit=4096)}
    too_big = results["deepface_couple.jpg"]  # 944,694 bytes: refused before it is read
    assert too_big.outcome is Outcome.UNREADABLE and "over the limit" in (too_big.error or "")
    too_many_pixels = results["obama_and_biden.jpg"]  # 2000x1428: refused by the decoder's header check
    assert too_many_pixels.outcome is Outcome.UNREADABLE and too_many_pixels.error
    assert results["biden.jpg"].outcome is Outcome.INDEXED
    assert not any("deepface_couple" in name or "obama_and_biden" in name for name in stored)


def _photos(tmp_path: Path, initial: str, count: int) -> Path:
    """``count`` LFW photos of people whose names start with ``initial``, in a folder of their own."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for n, path in enumerate(sorted(data_path("lfw").glob(f"{initial}*/*.jpg"))[:count]):
        shutil.copy(path, folder / f"{n}.jpg")
    return folder


def _command(tmp_path: Path, *args: str) -> list[str]:
    """The faceledger command line on the test's data directory, collection 'c' created."""
    script = shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")
    command = [script, "--data-dir", str(tmp_path / "data")]
    if not (tmp_path / "data").exists():
        subprocess.run([*command, "collection", "create", "c"], check=True, capture_output=True)
    return [*command, *args]


def _index_in_background(tmp_path: Path, initial: str, **popen: object) -> subprocess.Popen:
    """``faceledger index`` of 40 photos with two worker processes, running."""
    folder = _photos(tmp_path, initial, 40)
    return subprocess.Popen(_command(tmp_path, "index", str(folder), "-c", "c", "--workers", "2"), **popen)


def _children(pid: int, marker: bytes = b"multiprocessing") -> set[int]:
    """Multiprocessing children of ``pid`` (workers, resource tracker), from /proc: the console
    script's own helpers (pyenv's shim runs some before Python starts) do not count."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and marker in command:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_index_command_leaves_no_worker_behind(tmp_path: Path, how: signal.Signals) -> None:
    """They stayed (two workers and the resource tracker, about 240 MB) after SIGTERM and SIGKILL."""
    command = _index_in_background(tmp_path, "A", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_children(command.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + the resource tracker
        time.sleep(0.1)
    workers = _children(command.pid)
    assert len(workers) >= 3
    command.send_signal(how)
    command.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in workers if _alive(pid)]
    assert left == []


def test_ctrl_c_while_workers_start_prints_no_traceback(tmp_path: Path) -> None:
    command = _index_in_background(
        tmp_path, "B", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while len(_children(command.pid, b"spawn_main")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # both workers exist and are still starting Python (about a second)
    os.killpg(command.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, errors = command.communicate(timeout=60)
    assert "Traceback" not in errors and "KeyboardInterrupt" not in errors
    assert command.returncode == 130


def test_the_same_image_is_indexed_once_per_collection_by_folder_indexing(tmp_path: Path) -> None:
    """Two runs over one folder at once stored every image twice, and one run stored
    byte-identical files under two names twice."""
    folder = _photos(tmp_path, "C", 12)
    for photo in list(folder.iterdir()):
        shutil.copy(photo, folder / f"copy-{photo.name}")  # the same bytes under another name
    command = _command(tmp_path, "index", str(folder), "-c", "c", "--workers", "1", "--json")
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(2)]
    for run in runs:
        run.communicate(timeout=300)
    with faceledger.open(tmp_path / "data") as service:
        db = service.store.database.connection()
        counts = db.execute("SELECT image_sha256, COUNT(*) FROM images GROUP BY image_sha256").fetchall()
    assert len(counts) == 12 and all(count == 1 for _, count in counts)


def test_ctrl_c_during_a_ray_run_keeps_whole_images_and_leaves_no_ray_behind(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for person in sorted(p for p in data_path("lfw").iterdir() if p.is_dir())[:600]:
        shutil.copytree(person, photos / person.name)
    data = tmp_path / "data"
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c")
    command = subprocess.Popen(
        [
            shutil.which("faceledger"),
            "--data-dir",
            str(data),
            "index",
            str(photos),
            "-c",
            "c",
            "--ray",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the actors have indexed something
        with faceledger.open(data) as service:
            if service.describe_collection(collection_id="c")["FaceCount"]:
                break
        time.sleep(0.5)
    os.killpg(command.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group, Ray's processes too
    _, errors = command.communicate(timeout=120)
    assert command.returncode == 130 and "Traceback" not in errors, errors[-2000:]
    assert "Interrupted" in errors
    with faceledger.open(data) as service:
        kept = service.describe_collection(collection_id="c")["FaceCount"]
        assert 0 < kept < 700 and service.check_data_directory()["Problems"] == []
        # the store and the index agree on what was kept (whole images, each in one transaction)
        assert len(service.indexes.for_search("c")) == kept
    deadline = time.monotonic() + 10  # a Ray worker whose raylet ended leaves on its own, within moments
    while (left := _ray_processes_of_session(command.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def _ray_processes_of_session(session: int) -> list[bytes]:
    """The command lines of Ray's processes in one session: those the command started (an earlier
    test's in-process cluster may still be ending, and is no concern of this one)."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat, cmdline = _read(Path(f"/proc/{pid}/stat")), _read(Path(f"/proc/{pid}/cmdline"))
        fields = stat.rpartition(b")")[2].split()  # after the command name: state ppid pgrp session ...
        in_session = len(fields) > 3 and int(fields[3]) == session
        if in_session and any(name in cmdline for name in (b"raylet", b"gcs_server", b"ray::")):
            left.append(cmdline)
    return left


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_ray_asked_for_but_not_installed_is_a_clear_error(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with faceledger.open(tmp_path / "data") as service:
        service.create_collection(collection_id="c")
        with pytest.raises(InvalidParameterException, match=r"pip install 'faceledger\[ray\]'"):
            list(index_files(service, "c", folder, find_image_files(folder), ray=True))
        assert service.describe_collection(collection_id="c")["FaceCount"] == 0
