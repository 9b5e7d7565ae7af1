"""`models/coverage.py` on a representative subset: the networks with a transposed conv,
up-sampling and skip concatenations (U-Net), 1-D convolutions (audio) and two outputs from a
nested backbone (detector) pass every column; the full table is `models/coverage.md`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "models" / "coverage.py"


@pytest.mark.slow
def test_coverage_subset_passes_every_column(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--only",
                           "U-Net,Conv1D audio,SSD detector", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "coverage.json").read_text())["networks"]
    assert [r["network"] for r in rows] == ["U-Net", "Conv1D audio", "SSD detector"]
    for row in rows:
        for column in ("qat", "shrink", "factorize", "student"):
            assert row[column]["ok"], (row["network"], column, row[column])
        assert row["qat"]["integer_only"] and row["qat"]["agreement"] >= 0.99
    detector = rows[2]
    assert detector["qat"]["box_error"] < 0.1  # box offsets: RMSE under a tenth of their spread
    assert "| U-Net |" in (tmp_path / "coverage.md").read_text()
