"""The calibration tables: see faceledger/vision/calibration.py; the shipped one is the model's."""

from __future__ import annotations

# re-export until the service is rewired
from faceledger.vision import calibration
from faceledger.vision.calibration import SAFE_FMR, ThresholdRow, ThresholdTable
from faceledger.vision.model import LFW_THRESHOLDS as SHIPPED_TABLE
from faceledger.vision.model import DlibResNetModel

__all__ = ["SAFE_FMR", "SHIPPED_TABLE", "ThresholdRow", "ThresholdTable", "safe_search_threshold", "shipped_table"]


def shipped_table() -> ThresholdTable:
    return DlibResNetModel().threshold_table()


def safe_search_threshold(table: ThresholdTable | None = None) -> float:
    return calibration.safe_search_threshold(table or shipped_table())
