"""`twins infer` on a full disk: one clear error naming the folder, only whole outputs left, no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_onnxruntime_backend import _export, _tiny_net, _write_inputs

from twins_tasks.cli import main


@pytest.fixture
def tiny_disk(tmpfs):
    """A 64 KiB tmpfs (room for a few TXT outputs), or a skip saying why there is none."""
    return tmpfs("64k", "tiny")


def test_infer_on_a_full_disk_says_no_space_and_leaves_only_whole_outputs(tmp_path: Path, tiny_disk: Path, capsys):
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend

    tiny = _export(_tiny_net(), tmp_path / "tiny.onnx")
    model = OnnxRuntimeBackend(threads=1).compile(tiny, 4, tmp_path / "compiled").artifact
    _write_inputs(tmp_path / "bins", 24)
    argv = ["infer", "--backend", "onnxruntime", "--model", str(model), "--input", str(tmp_path / "bins")]
    argv += ["--batchsize", "4", "--output", str(tiny_disk), "--output_dirname", "run", "--outfmt", "TXT"]
    assert main(argv) == 2  # a full disk: bad input, not retried
    err = capsys.readouterr().err
    assert f"twins infer: error: no space left on {tiny_disk}/run (No space left on device;" in err
    assert "pass another --output" in err and "Traceback" not in err
    outputs = list((tiny_disk / "run").iterdir())
    assert outputs and all(p.name.endswith("_0.txt") and not p.name.startswith(".") for p in outputs)
    assert all(len(p.read_text().split()) == 1000 for p in outputs)  # whole files only
