"""Similarity as dlib's ResNet maps it: see faceledger/vision/similarity.py and vision/model.py."""

# re-export until the service is rewired
from faceledger.vision.model import RESNET_V1_SCALE as _SCALE

REFERENCE_DISTANCE = _SCALE.reference_distance
REFERENCE_SIMILARITY = _SCALE.reference_similarity
similarity_from_squared_distance = _SCALE.from_squared_distance
similarity_from_distance = _SCALE.from_distance
max_squared_distance = _SCALE.max_squared_distance
similarity_between = _SCALE.between
