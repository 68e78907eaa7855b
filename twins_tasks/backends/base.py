"""The backend interface: compile (ONNX -> fixed-batch artifact), infer (ais_bench layout), perf."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from ..types import CompileResult, InferResult, PerfResult


class Backend(abc.ABC):
    """One way to run the model. Implementations must write ais_bench's output layout exactly."""

    name: ClassVar[str]
    artifact_suffix: ClassVar[str]

    @abc.abstractmethod
    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        """Compile ``model`` (ONNX, dynamic batch) for ``batch_size`` into ``output_dir``.

        ``name`` is the artifact's base name (default ``<model stem>_bs<N>``, as in the recipe).
        """

    @abc.abstractmethod
    def infer(
        self,
        artifact: Path,
        inputs: str | Path,
        batch_size: int,
        output: Path,
        output_dirname: str,
        outfmt: str = "BIN",
    ) -> InferResult:
        """Run every input file; write ``<output>/<output_dirname>/<stem>_0.<fmt>``, one per input."""

    @abc.abstractmethod
    def perf(self, artifact: Path, batch_size: int, *, loop: int = 20, warmup: int = 1) -> PerfResult:
        """Pure performance: ``loop`` timed runs on random input after ``warmup`` untimed ones."""

    @abc.abstractmethod
    def options_key(self) -> dict[str, Any]:
        """Everything besides model and batch size that changes the compiled artifact (cache key)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Device and software versions, for the results database."""
