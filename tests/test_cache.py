"""Content-addressed caches: reuse when the key matches, rebuild when an entry was damaged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from twins_tasks.backends.base import Backend, CompileResult
from twins_tasks.cache import COMPILE_RECORD, compile_cached
from twins_tasks.errors import MissingOutputError


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
    assert json.loads((entry / COMPILE_RECORD).read_text())["artifact"] == first["artifact"]
    assert "is incomplete" in caplog.text
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # nothing left aside
    assert compile_cached(backend, model, 4, tmp_path / "cache")["cached"] is True


def test_a_backend_that_writes_nothing_is_an_error_not_a_record(tmp_path, model):
    with pytest.raises(MissingOutputError, match="is incomplete right after it was built"):
        compile_cached(CountingBackend(write=False), model, 4, tmp_path / "cache")
