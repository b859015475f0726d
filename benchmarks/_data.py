"""Where benchmarks find the shared face data (same rule as the tests)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT = Path(
    os.environ.get("FACELEDGER_TEST_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data")
)


def require(*parts: str) -> Path:
    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"benchmark data missing: {path} (set FACELEDGER_TEST_DATA)")
    return path
