"""The face models a service runs: the default one, and those its operator registered.

A collection records the version of the model it was made with (FaceModelVersion) and is always
indexed and searched with that model; templates of two models are never compared. An operator
registers an ONNX embedding network of their own (``faceledger models register``): its file and
spec are recorded in ``DATA_DIR/models/NAME.json`` (0600), the file is checked against the spec,
and its SHA-256 is part of the model's version, so a changed file is a different model. Such a
model ships no threshold table: a collection made with it searches only once
``faceledger calibrate`` has stored one measured on the operator's own labelled photos.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from faceledger.errors import InvalidParameterException
from faceledger.keys.files import write_private_file
from faceledger.store import Store
from faceledger.vision import FaceAnalyzer
from faceledger.vision.fusion import FusedFaceModel, fused_model
from faceledger.vision.model import FaceModel
from faceledger.vision.onnx_model import OnnxFaceModel
from faceledger.vision.onnx_spec import OnnxModelSpec

MODELS_DIR = "models"
log = logging.getLogger(__name__)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class FaceModels:
    def __init__(self, default: FaceAnalyzer, data_dir: Path, store: Store) -> None:
        self.default = default
        self._store = store
        self._dir = data_dir / MODELS_DIR
        self._by_version: dict[str, FaceAnalyzer] = {default.model.version: default}
        self._by_name: dict[str, FaceAnalyzer] = {default.model.name: default}
        records = [(path.stem, json.loads(path.read_text())) for path in sorted(self._dir.glob("*.json"))]
        # networks first: a fusion is made of models registered before it
        for name, record in sorted(records, key=lambda item: "fusion" in item[1]):
            try:
                self._add(name, self._fused_model(name, record) if "fusion" in record else self._operator_model(record))
            except InvalidParameterException as error:  # its collections answer that it is missing
                log.warning("face model %s not loaded: %s", name, error.message)

    def named(self, name: str | None) -> FaceModel:
        """The model called ``name`` (None: the default)."""
        if name is None:
            return self.default.model
        analyzer = self._by_name.get(name)
        if analyzer is None:
            known = ", ".join(sorted(self._by_name))
            raise InvalidParameterException(f"No face model {name!r} here; known: {known}.")
        return analyzer.model

    def analyzer(self, version: str) -> FaceAnalyzer:
        """The analyzer (detector + model) of the model whose version a collection records."""
        analyzer = self._by_version.get(version)
        if analyzer is None:
            raise InvalidParameterException(
                f"The collection's templates were made by face model {version}, which this faceledger does not "
                "run (not the default, and not registered, or its file changed): register that model again "
                "with 'faceledger models register', or re-index the images into a new collection."
            )
        return analyzer

    def for_collection(self, collection_id: str) -> FaceAnalyzer:
        """The analyzer of the model the collection records (ResourceNotFound for no collection)."""
        return self.analyzer(self._store.face_model_version(collection_id))

    def listing(self) -> list[dict[str, object]]:
        return [
            {
                "Name": name,
                "FaceModelVersion": a.model.version,
                "Dimension": a.model.dimension,
                "ChipSize": a.model.chip_size,
                "Default": a is self.default,
            }
            for name, a in sorted(self._by_name.items())
        ]

    def register_fusion(
        self, name: str, parts: Sequence[str], weights: Sequence[float], reference_cosine: float
    ) -> FusedFaceModel:
        """Record the fusion of the models named ``parts`` (vision/fusion.py) as model ``name``.
        Its threshold table is the shipped one where exactly that fusion was measured, else none
        (``faceledger calibrate``)."""
        self._check_new_name(name)
        record = {
            "fusion": {
                "parts": list(parts),
                "weights": [float(w) for w in weights],
                "reference_cosine": reference_cosine,
            }
        }
        model = self._fused_model(name, record)
        self._check_unique(model)
        write_private_file(self._dir / f"{name}.json", json.dumps(record).encode())
        self._add(name, model)
        return model

    def register(self, name: str, onnx_file: Path, spec: dict, *, keep_copy: bool = False) -> FaceModel:
        """Check ``onnx_file`` against ``spec`` and record it as model ``name``. ``keep_copy``:
        copy the file into the data directory (0600) and use the copy, so that nothing outside
        the data directory (a cache, a download folder) has to stay for the model to run."""
        self._check_new_name(name)
        path = Path(onnx_file).resolve()
        if keep_copy:
            OnnxFaceModel(path, OnnxModelSpec.from_dict({**spec, "name": name}))  # refuse before copying
            copy = self._dir / f"{name}.onnx"
            write_private_file(copy, path.read_bytes())
            path = copy
        record = {"path": str(path), "spec": {**spec, "name": name}}
        model = self._operator_model(record)
        self._check_unique(model)
        write_private_file(self._dir / f"{name}.json", json.dumps({**record, "sha256": model.sha256}).encode())
        self._add(name, model)
        return model

    def _check_new_name(self, name: object) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidParameterException("A model name is 1-64 characters of a-z, 0-9, '.', '_', '-'.")
        if name in self._by_name:
            raise InvalidParameterException(f"A face model {name!r} is registered already.")

    def _fused_model(self, name: str, record: dict) -> FusedFaceModel:
        fusion = record["fusion"]
        parts = fusion.get("parts")
        if not isinstance(parts, list) or len(set(map(str, parts))) != len(parts):
            raise InvalidParameterException("A fusion names each of its models once.")
        models = tuple(self.named(str(part)) for part in parts)
        try:
            weights = tuple(float(w) for w in fusion["weights"])
            reference = float(fusion["reference_cosine"])
        except (KeyError, TypeError, ValueError):
            raise InvalidParameterException("A fusion needs numeric weights and a reference cosine.") from None
        return fused_model(name, models, weights, reference)

    def _operator_model(self, record: dict) -> OnnxFaceModel:
        model = OnnxFaceModel(Path(record["path"]), OnnxModelSpec.from_dict(record["spec"]))
        if "sha256" in record and record["sha256"] != model.sha256:
            # a collection made with it would recognise nobody: say so rather than search badly
            raise InvalidParameterException(
                f"The file of face model {record['spec'].get('name')!r} ({record['path']}) changed since it was "
                "registered: restore it, or register the new file under another name."
            )
        return model

    def _check_unique(self, model: FaceModel) -> None:
        known = self._by_version.get(model.version)
        if known is not None:  # collections find their model by version: it must stay theirs
            other = next(n for n, a in self._by_name.items() if a is known)
            raise InvalidParameterException(
                f"Face model {other!r} already is {model.version}: make collections with it instead."
            )

    def _add(self, name: str, model: FaceModel) -> None:
        self._check_unique(model)
        analyzer = FaceAnalyzer(detector=self.default.detector, model=model)
        self._by_version[model.version] = analyzer
        self._by_name[name] = analyzer
