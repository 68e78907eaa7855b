"""The cached steps (prepare_inputs / prepare_model / prepare_reference): damaged entries are rebuilt, a moved
work dir uses its own files, records hold paths relative to their entry; preprocessed inputs are keyed by the
images' content (a copy reuses them, a changed image is redone)."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twins_tasks import export as export_module
from twins_tasks import reference as reference_module
from twins_tasks.constants import BIN_BYTES
from twins_tasks.preprocess import sources as sources_module
from twins_tasks.preprocess import workers as workers_module
from twins_tasks.preprocess.inputs import PREPROCESS_RECORD, prepare_inputs
from twins_tasks.preprocess.transform import transform_image
from twins_tasks.sample import make_sample, synthetic_photo


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


# ------------------------------------------------------------------------------ keyed by content (issue 19)


def _own_copy(val: Path, dest: Path, *, age_s: float = 3600) -> Path:
    """A copy as `cp -r` makes it: the same bytes, new dates (all ``age_s`` old, past the stat cache's racy window)."""
    shutil.copytree(val, dest, copy_function=shutil.copyfile)
    when = time.time_ns() - int(age_s * 1e9)
    for path in dest.rglob("*.JPEG"):
        os.utime(path, ns=(when, when))
    return dest


def test_a_copy_with_new_dates_reuses_the_bins(val, tmp_path, monkeypatch):
    first = prepare_inputs(val, tmp_path / "cache", workers=1)
    copy = _own_copy(val, tmp_path / "copy", age_s=7200)
    assert {p.stat().st_mtime_ns for p in copy.rglob("*.JPEG")} != {p.stat().st_mtime_ns for p in val.rglob("*.JPEG")}
    monkeypatch.setattr(workers_module, "transform_image", lambda path: pytest.fail(f"decoded {path}"))
    again = prepare_inputs(copy, tmp_path / "cache", workers=1)
    assert again["cached"] is True and again["key"] == first["key"] and again["bin_path"] == first["bin_path"]
    assert again["root_path"] == str(copy) and again["dataset_fingerprint"] == first["dataset_fingerprint"]


def test_a_relative_spelling_without_the_record_keeps_every_bin_and_warns_of_no_change(
    val, tmp_path, monkeypatch, caplog
):
    root = _own_copy(val, tmp_path / "data" / "val")
    first = prepare_inputs(root, tmp_path / "cache", workers=1)
    (Path(first["bin_path"]) / PREPROCESS_RECORD).unlink()  # the record is gone: preprocess checks every bin
    monkeypatch.chdir(tmp_path / "data")
    monkeypatch.setattr(workers_module, "transform_image", lambda path: pytest.fail(f"decoded {path}"))
    again = prepare_inputs("val", tmp_path / "cache", workers=1)
    assert again["key"] == first["key"] and (again["num_written"], again["num_reused"]) == (0, 4)
    assert "image(s) changed" not in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_changed_image_is_found_and_only_it_is_redone(val, tmp_path, caplog):
    root = _own_copy(val, tmp_path / "val")
    first = prepare_inputs(root, tmp_path / "cache", workers=1)
    victim = sorted(root.rglob("*.JPEG"))[2]
    stat = victim.stat()
    synthetic_photo(240, 200, seed=42).save(victim, "JPEG")  # another picture under the same name...
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and the old date, as `cp -p` leaves it
    assert victim.stat().st_size != stat.st_size
    with caplog.at_level("INFO", logger="twins_tasks.preprocess"):
        again = prepare_inputs(root, tmp_path / "cache", workers=1)
    assert again["cached"] is False and again["key"] != first["key"]
    assert (again["num_written"], again["num_reused"]) == (1, 3)  # the unchanged bins come from the last entry
    assert "Linked 3 bins of unchanged images" in caplog.text
    written = np.fromfile(Path(again["bin_path"]) / f"{victim.stem}.bin", dtype=np.float32).reshape(3, 224, 224)
    np.testing.assert_array_equal(written, transform_image(victim))
    for kept in sorted(root.rglob("*.JPEG")):  # and the earlier entry is intact
        np.testing.assert_array_equal(
            np.fromfile(Path(first["bin_path"]) / f"{kept.stem}.bin", dtype=np.float32).reshape(3, 224, 224),
            transform_image(val / kept.relative_to(root)),
        )


def test_the_nightly_check_of_an_unchanged_dataset_reads_no_image(val, tmp_path, monkeypatch):
    root = _own_copy(val, tmp_path / "val")
    prepare_inputs(root, tmp_path / "cache", workers=1)
    opened: list[str] = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if str(file).startswith(str(root)):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    assert prepare_inputs(root, tmp_path / "cache", workers=1)["cached"] is True
    assert opened == []
    # a touched file (same bytes) is read once to learn that, and reused
    os.utime(sorted(root.rglob("*.JPEG"))[0], ns=(time.time_ns() - 10**12, time.time_ns() - 10**12))
    assert prepare_inputs(root, tmp_path / "cache", workers=1)["cached"] is True
    assert [Path(p).name for p in opened] == [sorted(root.rglob("*.JPEG"))[0].name]


def test_an_image_hashed_right_after_it_changed_is_hashed_again(val, tmp_path, monkeypatch):
    """git's racy case: a change within the file system's time resolution could keep size and date."""
    root = _own_copy(val, tmp_path / "val", age_s=0)
    first = prepare_inputs(root, tmp_path / "cache", workers=1)
    hashed: list[str] = []
    real = sources_module.sha256_file
    monkeypatch.setattr(sources_module, "sha256_file", lambda path: hashed.append(str(path)) or real(path))
    assert prepare_inputs(root, tmp_path / "cache", workers=1)["key"] == first["key"]
    assert len(hashed) == 4  # too fresh to be trusted from the stat cache


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
