"""Operators for the recipe's compile, inference and performance steps, on any twins_tasks backend.

On Ascend they wrap ``atc`` and ``python -m ais_bench`` through :class:`~twins_airflow.hooks.ToolHook`: the
tools' own lines stream into the task log and ``on_kill`` stops them. The work itself lives in
``twins_tasks`` (usable without Airflow); these classes only render arguments, build the backend and turn
its errors into task failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from twins_airflow.exceptions import task_failures
from twins_airflow.hooks import ToolHook
from twins_tasks.backends import BACKENDS, get_backend, resolve_backend_name
from twins_tasks.backends.base import Backend
from twins_tasks.checks import batch_size_problem, check_batch_size
from twins_tasks.constants import MAX_BATCH_SIZE, MIN_BATCH_SIZE, OUTPUT_FORMATS
from twins_tasks.errors import InputError
from twins_tasks.steps import (
    chips_for_perf,
    clear_failure,
    compile_step,
    infer_step,
    note_failure,
    perf_step,
    result_name,
    sample_for,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _check_int(name: str, value: Any, minimum: int) -> None:
    """Validate a literal integer argument now; templates and XComArgs are checked after rendering."""
    if isinstance(value, bool) or (
        isinstance(value, (int, str)) and not _is_template(value) and not _int_at_least(value, minimum)
    ):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum} (or a template)")


def _int_at_least(value: Any, minimum: int) -> bool:
    try:
        return int(str(value)) >= minimum
    except ValueError:
        return False


def _as_int(name: str, value: Any, minimum: int) -> int:
    """A rendered value (templates render to strings) as an int, or a task failure that names it."""
    if isinstance(value, bool) or not _int_at_least(value, minimum):
        raise InputError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(str(value))


def _check_batch_size_now(value: Any) -> None:
    """A literal batch size is checked at DAG parse time; templates and XComArgs after rendering."""
    problem = None if _is_template(value) or not isinstance(value, (int, str)) else batch_size_problem(value)
    if problem:
        raise ValueError(
            f"batch_size={value!r} must be an integer >= {MIN_BATCH_SIZE} and <= {MAX_BATCH_SIZE}: {problem}"
        )


def _artifact_path(artifact: Any) -> Path:
    """The .om path, from a path or from CompileOperator's XCom (its ``artifact`` entry)."""
    if isinstance(artifact, dict):
        if "artifact" not in artifact:
            raise InputError(
                f"artifact={artifact!r} is a dict without an 'artifact' entry: pass the "
                "compiled model's path or CompileOperator's XCom"
            )
        artifact = artifact["artifact"]
    return Path(str(artifact))


# Backend options by type: a templated value ("{{ params.device_id }}") renders as a string, and the backends
# take typed values only (twins_tasks knows nothing of Airflow's templates).
_INT_OPTIONS = ("device", "threads", "idle_memory_max_mb")
_FLOAT_OPTIONS = ("compile_timeout", "infer_timeout", "perf_timeout", "idle_aicore_max", "idle_wait_s", "idle_poll_s")


def _coerced(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "":  # an empty form field or template: not set
        return None
    if key in _INT_OPTIONS:
        return _as_int(key, value, 0)
    if key in _FLOAT_OPTIONS:
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{key}={value!r} must be a number") from None
    return value


class BackendOperator(BaseOperator):
    """Base for operators that run one recipe step on a twins_tasks backend.

    :param backend: ``auto`` (Ascend where the CANN toolkit is installed, else ONNX Runtime), ``ascend``
        or ``onnxruntime``. (templated)
    :param backend_options: keyword arguments of the backend: for ``ascend`` e.g. ``cann_env``, ``device``,
        ``soc_version``, ``precision_mode``, ``op_select_implmode``, ``ais_bench_python``; for
        ``onnxruntime`` ``providers`` and ``threads``. (templated)
    :param device_ids: the chips this step may lease one of (the DAG's plan resolves ``auto``); none: the
        backend's own device, no lease (ONNX Runtime has no chips). (templated)
    :param failure_dir: where a failure leaves ``bs<N>_<step>.json`` with its error, for the DAG's accuracy
        step to record why this batch size has no result (a later successful try removes it). (templated)

    The XCom is the step's record (a small dict); ``multiple_outputs`` defaults to True so that each entry
    is also its own XCom: ``compile_task.output["artifact"]``.
    """

    template_fields: Sequence[str] = ("backend", "backend_options", "device_ids", "failure_dir")
    step: str = ""  # compile / infer / perf: names the failure note
    template_fields_renderers = {"backend_options": "json"}
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        backend: str = "auto",
        backend_options: dict[str, Any] | None = None,
        device_ids: list[int] | None = None,
        failure_dir: str | None = None,
        **kwargs,
    ) -> None:
        # Each step returns a small dict: push its entries too, so `compile.output["artifact"]` works.
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        if isinstance(backend, str) and not _is_template(backend) and backend not in ("auto", *BACKENDS):
            raise ValueError(f"backend={backend!r} must be one of auto, {', '.join(BACKENDS)} (or a template)")
        self.backend = backend
        self.backend_options = backend_options
        self.device_ids = device_ids
        self.failure_dir = failure_dir

    @cached_property
    def hook(self) -> ToolHook:
        """Runs the backend's tools: streams their lines into the task log, stops them on kill."""
        return ToolHook()

    def make_backend(self) -> Backend:
        options = {key: _coerced(key, value) for key, value in (self.backend_options or {}).items()}
        name = resolve_backend_name(self.backend, cann_env=options.get("cann_env"))
        if name == "ascend":
            options["runner"] = self.hook
        self.log.info("Backend: %s%s", name, f" (from {self.backend!r})" if self.backend != name else "")
        return get_backend(name, **options)

    def execute(self, context: Context) -> Any:
        # Bad input fails at once, tool failures are retried: the mapping every task of the DAG shares.
        with task_failures():
            try:
                result = self.run_step(self.make_backend(), context)
            except Exception as exc:
                self._note(str(exc) or type(exc).__name__)
                raise
            self._note(None)
            return result

    def chips(self) -> list[int] | None:
        """The rendered ``device_ids`` as ints (a template renders a list's items as strings)."""
        if not self.device_ids:
            return None
        return [_as_int("device_ids", chip, 0) for chip in self.device_ids]

    def _note(self, error: str | None) -> None:
        """Leave (or, after a success, remove) this batch size's failure note for the accuracy step."""
        batch_size = getattr(self, "batch_size", None)
        if not self.failure_dir or batch_size is None or batch_size_problem(batch_size):
            return
        if error is None:
            clear_failure(self.failure_dir, check_batch_size(batch_size), self.step)
        else:
            note_failure(self.failure_dir, check_batch_size(batch_size), self.step, error)

    def run_step(self, backend: Backend, context: Context) -> Any:
        raise NotImplementedError

    def on_kill(self) -> None:
        self.hook.send_sigterm()


class CompileOperator(BackendOperator):
    """Compile the ONNX model for one batch size (``atc`` on Ascend), reusing an identical earlier build.

    The artifact lives under ``<cache_dir>/compiled/<backend>_bs<N>_<key>/``, where the key hashes the model
    file, the batch size and the backend's options; the XCom is the build record (``artifact``,
    ``batch_size``, ``compile_seconds``, ``backend``, ``command``, ``key``, ``cached``).

    :param model: the ONNX model (dynamic batch axis). (templated)
    :param batch_size: the batch size to compile for. (templated)
    :param cache_dir: root of the compiled-artifact cache. (templated)
    :param name: artifact base name (default ``<model stem>_bs<N>``, as in the recipe). (templated)
    """

    step = "compile"
    template_fields: Sequence[str] = (*BackendOperator.template_fields, "model", "batch_size", "cache_dir", "name")
    ui_color = "#f4e8d8"

    def __init__(self, *, model: str, batch_size: int | str, cache_dir: str, name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        _check_batch_size_now(batch_size)
        self.model = model
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.name = name

    def run_step(self, backend: Backend, context: Context) -> dict[str, Any]:
        batch_size = check_batch_size(self.batch_size)
        record = compile_step(backend, self.model, batch_size, self.cache_dir, name=self.name or None)
        self.log.info(
            "Artifact for batch size %d: %s (%s)",
            batch_size,
            record["artifact"],
            "reused" if record["cached"] else f"compiled in {record['compile_seconds']:.1f} s",
        )
        return record


class InferOperator(BackendOperator):
    """Run every input file through the compiled model (``python -m ais_bench`` on Ascend).

    Writes ``<output_root>/<output_dirname>/<input stem>_0.<fmt>``, one per input, and fails if any is missing.
    The XCom is the inference record (``output_dir``, counts, seconds, throughput, ais_bench's summary
    without its per-batch lists).

    :param artifact: the compiled model, or CompileOperator's XCom. (templated)
    :param inputs: folder(s) or files of preprocessed ``.bin``/``.npy`` inputs, comma-separated. (templated)
    :param batch_size: the artifact's batch size. (templated)
    :param output_root: the results root, ais_bench's ``--output`` (``output`` is taken: it is every
        operator's XComArg). (templated)
    :param output_dirname: the results folder under it (``--output_dirname``), a plain name. (templated)
    :param outfmt: ``TXT`` (as the recipe), ``NPY`` or ``BIN``. (templated)
    :param infer_chips: at most this many of ``device_ids`` the inference is split over (0: all of them; 1: one
        chip, as before the split). (templated)
    :param accuracy_scope: the plan's ``accuracy_scope``: a batch size among its ``sampled`` infers only the first
        ``sample_images`` inputs (none: every input). (templated)
    """

    step = "infer"
    template_fields: Sequence[str] = (
        *BackendOperator.template_fields,
        "artifact",
        "inputs",
        "batch_size",
        "output_root",
        "output_dirname",
        "outfmt",
        "accuracy_scope",
        "infer_chips",
    )
    ui_color = "#d8e8f4"

    def __init__(
        self,
        *,
        artifact: str | dict[str, Any],
        inputs: str,
        batch_size: int | str,
        output_root: str,
        output_dirname: str | None = None,
        outfmt: str = "TXT",
        accuracy_scope: dict[str, Any] | None = None,
        infer_chips: int | str = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_int("infer_chips", infer_chips, 0)
        _check_batch_size_now(batch_size)
        if isinstance(outfmt, str) and not _is_template(outfmt) and outfmt.upper() not in OUTPUT_FORMATS:
            raise ValueError(f"outfmt={outfmt!r} must be one of {', '.join(OUTPUT_FORMATS)}")
        self.artifact = artifact
        self.inputs = inputs
        self.batch_size = batch_size
        self.output_root = output_root
        self.output_dirname = output_dirname
        self.outfmt = outfmt
        self.accuracy_scope = accuracy_scope
        self.infer_chips = infer_chips

    def run_step(self, backend: Backend, context: Context) -> dict[str, Any]:
        batch_size = check_batch_size(self.batch_size)
        artifact = _artifact_path(self.artifact)
        name = self.output_dirname or result_name(artifact)
        # Written under a temporary name and renamed when complete: a retry never mixes two attempts.
        return infer_step(
            backend,
            artifact,
            self.inputs,
            batch_size,
            Path(self.output_root),
            name,
            str(self.outfmt).upper(),
            device_ids=self.chips(),
            purpose=context.get("run_id", ""),
            sample_images=sample_for(self.accuracy_scope, batch_size),
            max_chips=_as_int("infer_chips", self.infer_chips, 0),
        )


class PerfOperator(BackendOperator):
    """Pure performance on the compiled model (``ais_bench --loop`` on Ascend, after waiting for an idle NPU).

    The XCom is the performance record (latency statistics in ms and ``throughput`` in images/s).

    :param artifact: the compiled model, or CompileOperator's XCom. (templated)
    :param batch_size: the artifact's batch size. (templated)
    :param loop: timed runs per round. (templated)
    :param warmup: untimed runs before them. (templated)
    :param rounds: rounds of ``loop`` runs; the record is the median round's, with the rounds' spread. (templated)
    :param infer_record: InferOperator's XCom: perf prefers the chip that ran the inference (on the same host),
        and takes another of ``device_ids`` when that one is busy. (templated)
    """

    step = "perf"
    template_fields: Sequence[str] = (
        *BackendOperator.template_fields,
        "artifact",
        "batch_size",
        "loop",
        "warmup",
        "rounds",
        "infer_record",
    )
    ui_color = "#f4d8e8"

    def __init__(
        self,
        *,
        artifact: str | dict[str, Any],
        batch_size: int | str,
        loop: int | str = 20,
        warmup: int | str = 1,
        rounds: int | str = 1,
        infer_record: dict[str, Any] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_batch_size_now(batch_size)
        _check_int("loop", loop, 1)
        _check_int("warmup", warmup, 0)
        _check_int("rounds", rounds, 1)
        self.artifact = artifact
        self.batch_size = batch_size
        self.loop = loop
        self.warmup = warmup
        self.rounds = rounds
        self.infer_record = infer_record

    def run_step(self, backend: Backend, context: Context) -> dict[str, Any]:
        return perf_step(
            backend,
            _artifact_path(self.artifact),
            check_batch_size(self.batch_size),
            loop=_as_int("loop", self.loop, 1),
            warmup=_as_int("warmup", self.warmup, 0),
            rounds=_as_int("rounds", self.rounds, 1),
            device_ids=chips_for_perf(self.chips(), self.infer_record),
            purpose=context.get("run_id", ""),
        )
