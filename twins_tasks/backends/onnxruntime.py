"""ONNX Runtime backend: the recipe's compile / infer / perf steps for real on any CPU or GPU host.

``compile`` plays atc's part: it fixes the batch dimension and saves ORT's optimized graph as a per-batch-size
artifact. ``infer`` plays ais_bench's part with the same file layout (``twins_tasks.layout``) and a summary
JSON of the same shape, so one postprocess reads either backend's results.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import platform
import re
import shutil
import subprocess
import time
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..checks import check_batch_size
from ..constants import BIN_BYTES, IMAGE_SIZE, INPUT_NAME, OUTPUT_FORMATS
from ..errors import InputError
from ..files import atomic_path, write_json_atomic
from ..layout import list_inputs, output_path, write_output
from ..progress import Progress
from ..types import CompileResult, InferResult, PerfResult
from .base import Backend

log = logging.getLogger(__name__)

# Preference order for the default provider list; CPU always closes the list as the fallback for any node
# the accelerator provider does not take.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
# EXTENDED (not ALL) for the saved artifact: ALL adds layout transforms tied to the CPU it ran on, while the
# EXTENDED fusions are plain contrib ops any ORT build runs. ALL is applied again when a session loads it.
COMPILE_OPT_LEVEL = "ORT_ENABLE_EXTENDED"
RUN_OPT_LEVEL = "ORT_ENABLE_ALL"
# Bump when compile() changes what it writes, so cached artifacts from older code are not reused.
ARTIFACT_FORMAT = 1
IMAGE_FLOATS = BIN_BYTES // 4  # 3*224*224
IMAGE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)
# Larger than this, a single-file ONNX cannot be serialized (protobuf's 2 GB limit).
_PROTOBUF_LIMIT = 2**31 - 1
_NAME_OK = re.compile(r"^[A-Za-z0-9._+-]+$")


def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (taskset/cgroup affinity), not all the host's: more threads than cores thrash."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _gpu_name() -> str:
    """First GPU's name via nvidia-smi (argv, short timeout); generic words where it is not there."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            proc = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            names = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
            if proc.returncode == 0 and names:
                return names[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return "NVIDIA GPU"


def _stats(values_ms: list[float]) -> dict[str, float | int]:
    """ais_bench's statistics block: min, max, mean, median, percentile(99%), count."""
    if not values_ms:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "percentile(99%)": float(np.percentile(arr, 99)),
        "count": int(arr.size),
    }


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with the best available execution provider (TensorRT > CUDA > CPU)."""

    name: ClassVar[str] = "onnxruntime"
    artifact_suffix: ClassVar[str] = ".onnx"

    def __init__(self, *, providers: list[str] | None = None, threads: int | None = None, runner: Any = None) -> None:
        """:param providers: ONNX Runtime execution providers in priority order (default: best available).
        :param threads: intra-op threads (default: the cores this process may use).
        :param runner: ignored; accepted so every backend takes the same keyword arguments.
        """
        import onnxruntime as ort

        available = list(ort.get_available_providers())
        if providers:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise InputError(
                    f"ONNX Runtime execution provider(s) {', '.join(unknown)} not available in "
                    f"onnxruntime {ort.__version__}: choose from {', '.join(available)}"
                )
            chosen = [p for p in dict.fromkeys(providers) if p != CPU_PROVIDER]
        else:
            chosen = [p for p in PREFERRED_PROVIDERS if p in available and p != CPU_PROVIDER]
        self.providers: list[str] = [*chosen, CPU_PROVIDER]
        if threads is None:
            threads = usable_cores()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"--threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        self.ort_version: str = ort.__version__

    # ----------------------------------------------------------------------------------------- sessions

    def _session_options(self, level: str) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.intra_op_num_threads = self.threads
        # One request at a time: inter-op parallelism only adds threads competing for the same cores.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # ORT's own warnings (e.g. unused initializers) are noise in task logs
        return so

    def _open(self, artifact: Path) -> Any:
        """Load an artifact for running; logs how long the load (graph optimization included) took."""
        import onnxruntime as ort

        artifact = Path(artifact)
        if not artifact.is_file():
            raise InputError(
                f"artifact {artifact} does not exist: build it with `twins compile --backend "
                f"onnxruntime --model MODEL.onnx --batchsize N --output DIR`"
            )
        start = time.perf_counter()
        try:
            session = ort.InferenceSession(
                str(artifact), self._session_options(RUN_OPT_LEVEL), providers=self.providers
            )
        except Exception as exc:  # ORT raises its own exception types for corrupt/unsupported models
            raise InputError(f"ONNX Runtime cannot load {artifact}: {exc}") from exc
        log.info(
            "Loaded %s in %.1f s (providers %s, %d intra-op threads)",
            artifact,
            time.perf_counter() - start,
            ",".join(session.get_providers()),
            self.threads,
        )
        return session

    @staticmethod
    def _fixed_input(session: Any, artifact: Path, batch_size: int) -> tuple[str, tuple[int, ...]]:
        """The artifact's input name and shape; it must be one (batch_size, 3, 224, 224) float input."""
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise InputError(
                f"artifact {artifact} has {len(inputs)} inputs ({[i.name for i in inputs]}); "
                f"the Twins model has exactly one, {INPUT_NAME!r}"
            )
        shape = list(inputs[0].shape)
        if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
            raise InputError(
                f"artifact {artifact} input {inputs[0].name!r} has shape {shape}, expected "
                f"(N, 3, {IMAGE_SIZE}, {IMAGE_SIZE})"
            )
        if not isinstance(shape[0], int) or shape[0] < 1:
            raise InputError(
                f"artifact {artifact} has a dynamic batch dimension ({shape[0]!r}): compile it "
                f"for one batch size with `twins compile --batchsize {batch_size}`"
            )
        if shape[0] != batch_size:
            raise InputError(
                f"artifact {artifact} was compiled for batch size {shape[0]}, not {batch_size}: "
                f"pass --batchsize {shape[0]} or compile it for batch size {batch_size}"
            )
        return inputs[0].name, tuple(shape)

    @cached_property
    def _device(self) -> str:
        first = self.providers[0]
        if first == CPU_PROVIDER:
            return f"{first} {cpu_model_name()} ({usable_cores()} cores)"
        return f"{first} {_gpu_name()}"

    # ------------------------------------------------------------------------------------------ compile

    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        """Fix the batch dimension of ``model`` to ``batch_size`` and save ORT's optimized graph.

        Writes ``<output_dir>/<name>.onnx`` (name default ``<model stem>_bs<N>``, like atc's ``--output``).
        """
        import onnx
        import onnxruntime as ort
        from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed, make_input_shape_fixed

        batch_size = check_batch_size(batch_size)
        model = Path(model)
        if not model.is_file():
            raise InputError(f"ONNX model {model} does not exist: export it with `twins pth2onnx`")
        name = name or f"{model.stem}_bs{batch_size}"
        if not _NAME_OK.match(name):
            raise InputError(f"artifact name {name!r} must be a plain file name (letters, digits, . _ + -)")
        artifact = Path(output_dir) / f"{name}{self.artifact_suffix}"
        start = time.perf_counter()
        try:
            proto = onnx.load(str(model))
        except Exception as exc:  # protobuf DecodeError and friends
            raise InputError(f"{model} is not a readable ONNX model: {exc}") from exc
        graph = proto.graph
        initializers = {init.name for init in graph.initializer}
        real_inputs = [i for i in graph.input if i.name not in initializers]
        if len(real_inputs) != 1 or real_inputs[0].name != INPUT_NAME:
            raise InputError(
                f"ONNX model {model} has inputs {[i.name for i in real_inputs]}; expected one input "
                f"named {INPUT_NAME!r} (export with `twins pth2onnx`)"
            )
        tensor_type = real_inputs[0].type.tensor_type
        if tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise InputError(
                f"ONNX model {model} input {INPUT_NAME!r} has element type "
                f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}, expected FLOAT"
            )
        dims = list(tensor_type.shape.dim)
        described = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
        if len(dims) != 4 or tuple(described[1:]) != IMAGE_SHAPE:
            raise InputError(
                f"ONNX model {model} input {INPUT_NAME!r} has shape {described}, expected "
                f"(N, 3, {IMAGE_SIZE}, {IMAGE_SIZE})"
            )
        if dims[0].HasField("dim_value") and dims[0].dim_value != batch_size:
            raise InputError(
                f"ONNX model {model} has a fixed batch size of {dims[0].dim_value}; re-export it with "
                f"a dynamic batch axis to compile for batch size {batch_size}"
            )
        # Replaces the batch dim_param everywhere it appears (outputs and value_info included).
        make_input_shape_fixed(graph, INPUT_NAME, [batch_size, *IMAGE_SHAPE])
        for out in graph.output:  # an output batch axis exported under a different symbolic name
            out_dims = out.type.tensor_type.shape.dim
            if out_dims and out_dims[0].HasField("dim_param"):
                make_dim_param_fixed(graph, out_dims[0].dim_param, batch_size)
        if proto.ByteSize() > _PROTOBUF_LIMIT:
            raise InputError(f"ONNX model {model} is over 2 GB and cannot be compiled as a single file")
        model_bytes = proto.SerializeToString()
        del proto  # a second copy of ~400 MB of weights is not needed while ORT optimizes

        so = self._session_options(COMPILE_OPT_LEVEL)
        with atomic_path(artifact) as tmp:
            so.optimized_model_filepath = str(tmp)
            try:
                ort.InferenceSession(model_bytes, so, providers=self.providers)
            except Exception as exc:
                raise InputError(f"ONNX Runtime cannot optimize {model} for batch size {batch_size}: {exc}") from exc
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise InputError(f"ONNX Runtime wrote no optimized model for {model} (expected {artifact})")
        seconds = time.perf_counter() - start
        log.info(
            "Compiled %s for batch size %d -> %s in %.1f s (onnxruntime %s, %s)",
            model,
            batch_size,
            artifact,
            seconds,
            self.ort_version,
            COMPILE_OPT_LEVEL,
        )
        return CompileResult(artifact=str(artifact), batch_size=batch_size, compile_seconds=seconds, backend=self.name)

    # -------------------------------------------------------------------------------------------- infer

    def infer(
        self,
        artifact: Path,
        inputs: str | Path,
        batch_size: int,
        output: Path,
        output_dirname: str,
        outfmt: str = "BIN",
    ) -> InferResult:
        """ais_bench semantics: natural-order inputs in batches, last batch padded, one output per input."""
        batch_size = check_batch_size(batch_size)
        fmt = str(outfmt).upper()
        if fmt not in OUTPUT_FORMATS:
            raise InputError(f"--outfmt {outfmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        if not output_dirname or Path(output_dirname).name != output_dirname:
            raise InputError(f"--output_dirname {output_dirname!r} must be a plain folder name")
        files = list_inputs(inputs)
        for path in files:
            _check_input_size(path)
        artifact = Path(artifact)
        session = self._open(artifact)
        input_name, input_shape = self._fixed_input(session, artifact, batch_size)
        output_names = [o.name for o in session.get_outputs()]

        out_dir = Path(output) / output_dirname
        if out_dir.is_dir() and any(out_dir.iterdir()):
            log.warning(
                "Output folder %s is not empty: files of this run replace same-named ones, others stay", out_dir
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
        log.info(
            "Running %d inputs in %d batches of %d (last batch padded with %d copies) -> %s (%s)",
            len(files),
            len(chunks),
            batch_size,
            -len(files) % batch_size,
            out_dir,
            fmt,
        )

        compute_ms: list[float] = []
        filesinfo: dict[str, dict[str, list]] = {}
        written = 0
        progress = Progress(f"{self.name} infer", len(files), unit="images", logger=log)
        start = time.perf_counter()
        # One reader thread loads batch k+1 while ORT (which releases the GIL) computes batch k.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="twins-reader") as pool:
            pending = pool.submit(_load_batch, chunks[0], input_shape)
            for k, chunk in enumerate(chunks):
                batch = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(_load_batch, chunks[k + 1], input_shape)
                t0 = time.perf_counter()
                results = session.run(output_names, {input_name: batch})
                compute_ms.append((time.perf_counter() - t0) * 1000.0)
                outfiles = []
                for j, path in enumerate(chunk):  # padding rows (j >= len(chunk)) are not written
                    for index, result in enumerate(results):
                        target = output_path(out_dir, path.stem, index, fmt)
                        write_output(target, _row(result, j, batch_size, output_names[index]), fmt)
                        outfiles.append(str(target))
                    written += 1
                filesinfo[str(k)] = {"infiles": [[str(p) for p in chunk]], "outfiles": outfiles}
                progress.update(len(chunk))
        seconds = time.perf_counter() - start
        progress.finish()

        stats = _stats(compute_ms)
        zero = _stats([0.0] * len(compute_ms))
        summary: dict[str, Any] = {
            "NPU_compute_time": stats,
            # Inputs are host numpy arrays and session.run includes any host<->device copies, so there is
            # no separate H2D/D2H figure; zeros keep the keys ais_bench readers expect.
            "H2D_latency": zero,
            "D2H_latency": zero,
            "latency_note": "onnxruntime: host-device copies are inside session.run (NPU_compute_time); "
            "H2D_latency/D2H_latency are reported as 0",
            "throughput": 1000.0 * batch_size / stats["mean"] if stats["mean"] > 0 else 0.0,
            "npu_compute_time_list": compute_ms,
            "filesinfo": filesinfo,
            "args": {
                "model": str(artifact),
                "input": str(inputs),
                "output": str(output),
                "output_dirname": output_dirname,
                "outfmt": fmt,
                "batchsize": batch_size,
                "backend": self.name,
                "providers": self.providers,
                "threads": self.threads,
                "device": self._device,
                "onnxruntime": self.ort_version,
                "time": datetime.now().astimezone().isoformat(timespec="seconds"),
            },
        }
        write_json_atomic(Path(output) / f"{output_dirname}_summary.json", summary)
        log.info(
            "compute_time (ms): mean %.2f over %d batches; throughput %.2f img/s (compute), %.2f img/s end to end",
            stats["mean"],
            len(compute_ms),
            summary["throughput"],
            len(files) / seconds if seconds > 0 else 0.0,
        )
        return InferResult(
            output_dir=str(out_dir),
            num_inputs=len(files),
            num_outputs=written,
            batch_size=batch_size,
            seconds=seconds,
            throughput=len(files) / seconds if seconds > 0 else 0.0,
            summary=summary,
        )

    # --------------------------------------------------------------------------------------------- perf

    def perf(self, artifact: Path, batch_size: int, *, loop: int = 20, warmup: int = 1) -> PerfResult:
        """``warmup`` untimed then ``loop`` timed ``session.run`` calls on random input of the artifact's shape."""
        batch_size = check_batch_size(batch_size)
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise InputError(f"--loop must be an integer >= 1, got {loop!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"--warmup_count must be an integer >= 0, got {warmup!r}")
        artifact = Path(artifact)
        session = self._open(artifact)
        input_name, input_shape = self._fixed_input(session, artifact, batch_size)
        feed = {input_name: np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)}
        for _ in range(warmup):
            session.run(None, feed)
        latencies = []
        for _ in range(loop):
            t0 = time.perf_counter()
            session.run(None, feed)
            latencies.append((time.perf_counter() - t0) * 1000.0)
        result = PerfResult.from_latencies(latencies, batch_size, backend=self.name, device=self._device)
        log.info(
            "perf %s bs %d: mean %.2f ms, %.2f img/s over %d loops",
            artifact.name,
            batch_size,
            result.mean_ms,
            result.throughput,
            loop,
        )
        return result

    # ------------------------------------------------------------------------------------------ records

    def options_key(self) -> dict[str, Any]:
        return {
            "providers": self.providers,
            "graph_optimization_level": COMPILE_OPT_LEVEL,
            "onnxruntime": self.ort_version,
            "artifact_format": ARTIFACT_FORMAT,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "onnxruntime": self.ort_version,
            "providers": self.providers,
            "threads": self.threads,
            "device": self._device,
            "cpu_model": cpu_model_name(),
            "cpu_count": usable_cores(),
        }


def _check_input_size(path: Path) -> None:
    """Each input must be one preprocessed image: 3*224*224 float32 values."""
    if path.suffix.lower() == ".npy":
        try:
            size = np.load(path, mmap_mode="r").size
        except Exception as exc:  # bad header, pickled object arrays, truncated file
            raise InputError(f"input {path} is not a readable .npy file: {exc}") from exc
        if size != IMAGE_FLOATS:
            raise InputError(
                f"input {path} holds {size} values, expected {IMAGE_FLOATS} (3x{IMAGE_SIZE}x"
                f"{IMAGE_SIZE} float32): re-run `twins preprocess`"
            )
        return
    size = path.stat().st_size
    if size != BIN_BYTES:
        raise InputError(
            f"input {path} is {size} bytes, expected {BIN_BYTES} (3x{IMAGE_SIZE}x{IMAGE_SIZE} "
            f"float32, no header): re-run `twins preprocess`"
        )


def _load_batch(chunk: list[Path], shape: tuple[int, ...]) -> np.ndarray:
    """Read a chunk of input files into one batch; a short last chunk is padded with copies of its last file."""
    batch = np.empty(shape, dtype=np.float32)
    for j, path in enumerate(chunk):
        if path.suffix.lower() == ".npy":
            batch[j] = np.load(path).astype(np.float32, copy=False).reshape(IMAGE_SHAPE)
        else:
            with open(path, "rb") as fh:  # straight into the batch buffer: no intermediate copy
                got = fh.readinto(memoryview(batch[j]).cast("B"))
            if got != BIN_BYTES:
                raise InputError(f"input {path} gave {got} bytes, expected {BIN_BYTES}; did it change during the run?")
    batch[len(chunk) :] = batch[len(chunk) - 1]
    return batch


def _row(result: np.ndarray, j: int, batch_size: int, name: str) -> np.ndarray:
    """Row ``j`` of a batched output, kept 2-D (1, ...) like ais_bench's split of the batch."""
    if result.ndim == 0 or result.shape[0] != batch_size:
        raise InputError(
            f"model output {name!r} has shape {list(result.shape)}; expected batch size {batch_size} "
            f"first, so it can be split into one output per input"
        )
    return result[j : j + 1]
