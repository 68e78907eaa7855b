"""Content-addressed caches: reuse when the key matches, rebuild when an entry was damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from twins_tasks.backends.base import Backend
from twins_tasks.cache import COMPILE_RECORD, compile_cached, sweep_stale_temps
from twins_tasks.errors import MissingOutputError
from twins_tasks.types import CompileResult


class CountingBackend(Backend):
    """Only compile is used by the cache: it writes a small artifact and counts its calls."""

    name = "counting"
    artifact_suffix = ".bin"

    def __init__(self, write: bool = True) -> None:
        self.calls = 0
        self.write = write

    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        self.calls += 1
        artifact = Path(output_dir) / f"{name or model.stem}_bs{batch_size}.bin"
        if self.write:
            artifact.write_bytes(model.read_bytes() * batch_size)
        return CompileResult(artifact=str(artifact), batch_size=batch_size, compile_seconds=0.1, backend=self.name)

    def infer(self, *args: Any, **kwargs: Any):  # pragma: no cover - not used by the cache
        raise NotImplementedError

    def perf(self, *args: Any, **kwargs: Any):  # pragma: no cover - not used by the cache
        raise NotImplementedError

    def options_key(self) -> dict[str, Any]:
        return {"version": 1}

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"onnx-bytes")
    return path


def test_reuses_an_entry_with_the_same_key(tmp_path, model):
    backend = CountingBackend()
    first = compile_cached(backend, model, 4, tmp_path / "cache")
    second = compile_cached(backend, model, 4, tmp_path / "cache")
    assert backend.calls == 1 and first["cached"] is False and second["cached"] is True
    assert first["artifact"] == second["artifact"] and Path(first["artifact"]).read_bytes() == b"onnx-bytes" * 4
    assert compile_cached(backend, model, 8, tmp_path / "cache")["artifact"] != first["artifact"]
    assert backend.calls == 2


@pytest.mark.parametrize("damage", ["artifact deleted", "record deleted", "record garbled"])
def test_a_damaged_entry_is_rebuilt_in_place(tmp_path, model, damage, caplog):
    backend = CountingBackend()
    first = compile_cached(backend, model, 4, tmp_path / "cache")
    entry = Path(first["artifact"]).parent
    if damage == "artifact deleted":
        Path(first["artifact"]).unlink()
    elif damage == "record deleted":
        (entry / COMPILE_RECORD).unlink()
    else:
        (entry / COMPILE_RECORD).write_text("{not json")
    again = compile_cached(backend, model, 4, tmp_path / "cache")
    assert backend.calls == 2 and again["cached"] is False and again["artifact"] == first["artifact"]
    assert Path(again["artifact"]).read_bytes() == b"onnx-bytes" * 4
    assert json.loads((entry / COMPILE_RECORD).read_text())["artifact"] == Path(first["artifact"]).name
    assert "is incomplete" in caplog.text
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # nothing left aside
    assert compile_cached(backend, model, 4, tmp_path / "cache")["cached"] is True


def test_a_backend_that_writes_nothing_is_an_error_not_a_record(tmp_path, model):
    with pytest.raises(MissingOutputError, match="is incomplete right after it was built"):
        compile_cached(CountingBackend(write=False), model, 4, tmp_path / "cache")


# ------------------------------------------------------------------------------------- integrity, moves


def test_a_truncated_artifact_is_rebuilt(tmp_path, model, caplog):
    backend = CountingBackend()
    first = compile_cached(backend, model, 4, tmp_path / "cache")
    Path(first["artifact"]).write_bytes(b"onnx")  # damaged from outside: shorter than recorded
    again = compile_cached(backend, model, 4, tmp_path / "cache")
    assert backend.calls == 2 and again["cached"] is False
    assert Path(again["artifact"]).read_bytes() == b"onnx-bytes" * 4
    assert "has 4 bytes, its record says 40" in caplog.text


def test_a_copied_work_dir_uses_its_own_files(tmp_path, model):
    backend = CountingBackend()
    first = compile_cached(backend, model, 4, tmp_path / "work" / "cache")
    shutil.copytree(tmp_path / "work", tmp_path / "copy")
    shutil.rmtree(tmp_path / "work")  # the original is gone: the copy must not point at it
    again = compile_cached(backend, model, 4, tmp_path / "copy" / "cache")
    assert again["cached"] is True and backend.calls == 1
    assert again["artifact"] == str(
        tmp_path / "copy" / "cache" / Path(first["artifact"]).relative_to(tmp_path / "work" / "cache")
    )


def test_an_old_record_naming_another_work_dirs_file_is_rebuilt(tmp_path, model):
    backend = CountingBackend()
    first = compile_cached(backend, model, 4, tmp_path / "cache")
    record_path = Path(first["artifact"]).parent / COMPILE_RECORD
    record = json.loads(record_path.read_text())
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    record["artifact"] = str(tmp_path / "elsewhere.bin")  # what records held before paths were relative
    record_path.write_text(json.dumps(record))
    again = compile_cached(backend, model, 4, tmp_path / "cache")
    assert again["cached"] is False and Path(again["artifact"]).parent == record_path.parent


# ------------------------------------------------------------------------------------- stale temp sweeps


def test_temp_folder_of_a_killed_process_is_swept(tmp_path, model):
    section = tmp_path / "cache" / "compiled"
    code = (
        "import sys, time; from twins_tasks.files import atomic_dir\n"
        "with atomic_dir(sys.argv[1]) as tmp:\n"
        "    (tmp / 'big.onnx').write_bytes(b'x' * 1000); print(tmp, flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(section / "entry")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    temp = Path(proc.stdout.readline().strip())
    assert temp.is_dir() and temp.name.startswith(".entry.")
    assert sweep_stale_temps(section) == []  # its owner is alive: kept
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait()
    assert temp.is_dir()
    compile_cached(CountingBackend(), model, 4, tmp_path / "cache")  # any use of the section sweeps it
    assert not temp.exists()


def test_temp_entries_without_a_known_owner_are_swept_by_age(tmp_path):
    section = tmp_path / "onnx"
    old = section / ".twins_svt_large_abc.k3j4h5g6.tmp"  # the name format before owners were recorded
    fresh = section / ".twins_svt_large_def.a1b2c3d4.tmp"
    other_host = section / f".m.some-other-host-{os.getpid()}.zzzzzzzz.tmp"
    for folder in (old, fresh, other_host):
        folder.mkdir(parents=True)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert sweep_stale_temps(section) == [old.name]
    assert fresh.is_dir() and other_host.is_dir()
    assert sweep_stale_temps(tmp_path / "missing") == []
