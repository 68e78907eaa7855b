"""The infer step's leftovers at 50,000 images: a summary that points at the outputs, a read rate in the log."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from test_onnxruntime_backend import SHAPE, _export, _tiny_net, _write_inputs

from twins_tasks.steps import infer_step


def test_summary_points_into_the_final_folder_and_the_read_rate_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(threads=1)
    model = backend.compile(_export(_tiny_net(), tmp_path / "tiny.onnx"), 4, tmp_path / "compiled").artifact
    _write_inputs(tmp_path / "bins", 6)
    with caplog.at_level(logging.INFO, logger="twins_tasks.inference"):
        record = infer_step(backend, model, tmp_path / "bins", 4, tmp_path / "out", "bs4", "BIN")

    final = tmp_path / "out" / "bs4"
    assert record["output_dir"] == str(final) and not (tmp_path / "out" / "bs4.partial").exists()
    summary = json.loads((tmp_path / "out" / "bs4_summary.json").read_text())
    outfiles = [f for info in summary["filesinfo"].values() for f in info["outfiles"]]
    assert len(outfiles) == 6 and all(Path(f).parent == final and Path(f).is_file() for f in outfiles)
    assert summary["args"]["output_dirname"] == "bs4"
    assert ".partial" not in json.dumps(summary)
    assert not list((tmp_path / "out").glob("*.partial_summary.json"))

    size = 6 * 4 * math.prod(SHAPE)  # six float32 images
    read = [r.getMessage() for r in caplog.records if r.getMessage().startswith("inputs read:")]
    assert len(read) == 1 and f"{size / 2**30:.2f} GiB in " in read[0] and read[0].endswith("MB/s from storage)")
