"""The face engine: each module is one stage of the pipeline (see pipeline.py)."""

from faceledger.vision.face import BoundingBox, Face, FaceQuality, Landmarks, Pose
from faceledger.vision.image import DecodedImage, decode_image, read_image_file
from faceledger.vision.model import DlibResNetModel, FaceModel
from faceledger.vision.onnx_model import OnnxFaceModel
from faceledger.vision.onnx_spec import OnnxModelSpec
from faceledger.vision.pipeline import AnalyzedImage, FaceAnalyzer
from faceledger.vision.quality import QualityFilter

__all__ = [
    "AnalyzedImage",
    "BoundingBox",
    "DecodedImage",
    "DlibResNetModel",
    "Face",
    "FaceAnalyzer",
    "FaceModel",
    "FaceQuality",
    "Landmarks",
    "OnnxFaceModel",
    "OnnxModelSpec",
    "Pose",
    "QualityFilter",
    "decode_image",
    "read_image_file",
]
