"""The cached steps (prepare_inputs / prepare_model / prepare_reference): damaged entries are rebuilt, a moved
work dir uses its own files, records hold paths relative to their entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twins_tasks import export as export_module
from twins_tasks import reference as reference_module
from twins_tasks.constants import BIN_BYTES
from twins_tasks.preprocess.inputs import PREPROCESS_RECORD, prepare_inputs
from twins_tasks.sample import make_sample


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "val"
    make_sample(root, classes=2, per_class=2, seed=3)
    return root


def test_truncated_bin_in_the_cache_is_rebuilt(val, tmp_path, caplog):
    first = prepare_inputs(val, tmp_path / "cache", workers=1)
    victim = sorted(Path(first["bin_path"]).glob("*.bin"))[1]
    good = victim.read_bytes()
    victim.write_bytes(good[:1000])
    again = prepare_inputs(val, tmp_path / "cache", workers=1)
    assert again["cached"] is False and (again["num_written"], again["num_reused"]) == (1, 3)
    assert victim.read_bytes() == good and "are damaged (4 bins, 1 of the wrong size" in caplog.text
    assert prepare_inputs(val, tmp_path / "cache", workers=1)["cached"] is True


def test_deleted_bin_in_the_cache_is_rebuilt(val, tmp_path):
    first = prepare_inputs(val, tmp_path / "cache", workers=1)
    sorted(Path(first["bin_path"]).glob("*.bin"))[0].unlink()
    again = prepare_inputs(val, tmp_path / "cache", workers=1)
    assert again["cached"] is False and again["num_written"] == 1
    assert all(p.stat().st_size == BIN_BYTES for p in Path(again["bin_path"]).glob("*.bin"))


def test_moved_work_dir_uses_its_own_bins(val, tmp_path):
    first = prepare_inputs(val, tmp_path / "work" / "cache", workers=1)
    record = json.loads((Path(first["bin_path"]) / PREPROCESS_RECORD).read_text())
    assert record["bin_path"] == "."  # relative to the entry
    shutil.move(tmp_path / "work", tmp_path / "moved")
    again = prepare_inputs(val, tmp_path / "moved" / "cache", workers=1)
    assert again["cached"] is True
    assert again["bin_path"] == str(tmp_path / "moved" / "cache" / "bins" / first["key"])


# ------------------------------------------------------------------------------------------- ONNX model


@pytest.fixture
def fake_export(monkeypatch):
    """export_onnx without torch: writes a small 'model' and its parity JSON, counts calls."""
    calls: list[Path] = []

    def export_onnx(output: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append(Path(output))
        Path(output).write_bytes(b"onnx" * 100)
        parity = Path(output).with_suffix(".parity.json")
        parity.write_text("{}")
        return {
            "onnx": str(output),
            "size_bytes": 400,
            "parity_json": str(parity),
            "weights": "random-init seed=0",
            "parity": {"max_abs_diff": 0.0},
        }

    monkeypatch.setattr(export_module, "export_onnx", export_onnx)
    return calls


def test_model_record_is_relative_and_a_truncated_model_is_rebuilt(tmp_path, fake_export, caplog):
    first = export_module.prepare_model(tmp_path / "cache", random_init=True)
    entry = Path(first["onnx"]).parent
    stored = json.loads((entry / export_module.EXPORT_RECORD).read_text())
    assert (stored["onnx"], stored["parity_json"]) == ("twins_svt_large.onnx", "twins_svt_large.parity.json")
    assert export_module.prepare_model(tmp_path / "cache", random_init=True)["cached"] is True
    Path(first["onnx"]).write_bytes(b"onnx")  # truncated from outside
    again = export_module.prepare_model(tmp_path / "cache", random_init=True)
    assert again["cached"] is False and len(fake_export) == 2 and Path(again["onnx"]).stat().st_size == 400
    assert "has 4 bytes, its record says 400" in caplog.text


def test_copied_work_dir_uses_its_own_model(tmp_path, fake_export):
    first = export_module.prepare_model(tmp_path / "a" / "cache", random_init=True)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    again = export_module.prepare_model(tmp_path / "b" / "cache", random_init=True)
    assert again["cached"] is True and len(fake_export) == 1
    assert again["onnx"].startswith(str(tmp_path / "b")) and again["parity_json"].startswith(str(tmp_path / "b"))
    assert first["onnx"].startswith(str(tmp_path / "a"))


# ------------------------------------------------------------------------------------------- reference


def test_truncated_reference_logits_are_rebuilt(tmp_path, monkeypatch, caplog):
    calls = []

    def reference_logits(bin_path: Path, output: Path, **kwargs: Any) -> dict[str, Any]:
        calls.append(output)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        np.savez(output, logits=np.zeros((2, 1000), np.float32))
        return {}

    monkeypatch.setattr(reference_module, "reference_logits", reference_logits)
    inputs, model = {"key": "i", "bin_path": str(tmp_path)}, {"key": "m", "model_name": "twins_svt_large"}
    first = reference_module.prepare_reference(tmp_path / "cache", inputs, model)
    assert reference_module.prepare_reference(tmp_path / "cache", inputs, model)["cached"] is True
    path = Path(first["reference"])
    path.write_bytes(path.read_bytes()[:50])
    again = reference_module.prepare_reference(tmp_path / "cache", inputs, model)
    assert again["cached"] is False and len(calls) == 2 and "are damaged" in caplog.text
