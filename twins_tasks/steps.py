"""The recipe's steps as the DAG's tasks and ``twins run`` call them: plan, compile, infer (on leased chips), perf.

Each adapter takes and returns small JSON-able records (paths and numbers), so the same functions serve the
operators' XComs and ``twins run``'s plain values. The work itself is in the step modules below this one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import Backend, get_backend, resolve_backend_name
from .baseline import resolve_baseline
from .cache import compile_cached, in_use
from .errors import InputError
from .files import write_json_atomic
from .inference import infer_checked
from .layout import list_inputs
from .reference import prepare_reference
from .sharding import infer_on_chips, link_files
from .store import folder_run_uid
from .types import PlanRecord

if TYPE_CHECKING:
    from .recipe import RecipeConfig
    from .store import ResultsStore

log = logging.getLogger(__name__)

FAILURES_DIR = "failures"  # <run folder>/failures/bs<N>_<step>.json: why a chain step failed
CHAIN_STEPS = ("compile", "infer", "perf")  # one batch size's chain, in order
# Per-batch lists in the ais_bench summary: 50,000 entries do not belong in an XCom.
_BIG_SUMMARY_KEYS = ("npu_compute_time_list", "filesinfo")


def safe_name(text: str) -> str:
    """A run id as a directory name (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def describe_backend(backend: Backend) -> dict[str, Any]:
    return {"backend": backend.name, **backend.describe()}


def plan_run(
    config: RecipeConfig, *, work_dir: str | Path, run_key: str, store: ResultsStore, run_uid: str | None = None
) -> PlanRecord:
    """Everything that can fail before hours of work, checked on the host that will do it; the run's folders.

    ``run_uid`` is the run's identity (``twins run`` makes a new one); without it, the one kept in the run
    folder, so that a retried or cleared plan of the same DAG run gets the identity the run may have recorded.
    """
    config.check_paths()
    store.check_writable()  # before hours of compute whose results it must keep
    work = Path(work_dir).resolve()
    run_dir = work / "runs" / safe_name(run_key)
    run_uid = run_uid or folder_run_uid(run_dir)
    store.check_run_key(run_key, run_uid)  # a name another run recorded: refused now, not at record
    resolve_baseline(store, config.baseline)  # an unknown run id fails now, not after the run
    backend = resolve_backend_name(config.backend.name, cann_env=config.backend.cann_env)
    options = config.backend.options(backend)
    instance = get_backend(backend, **options)
    device_ids = resolve_chips(instance, config.backend.device_ids)
    if device_ids and options.get("device") not in device_ids:
        # device_ids=auto on a host without chip 0: the backend's own chip, which soc_version=auto reads, is the
        # first one npu-smi shows there, not 0.
        options = {**options, "device": device_ids[0]}
        instance = get_backend(backend, **options)
    description = describe_backend(instance)
    return {
        "backend": backend,
        "backend_options": options,
        "backend_description": description,
        "batch_sizes": list(config.batch_sizes),
        "cache_dir": str(work / "cache"),
        "run_dir": str(run_dir),
        "result_dir": str(run_dir / "result"),
        "failure_dir": str(run_dir / FAILURES_DIR),
        "device_ids": device_ids,
        "config": config.to_dict(),
        "run_uid": run_uid,
        "accuracy_scope": config.accuracy_scope(),
    }


def prepare_reference_for(
    config: RecipeConfig, cache_root: str | Path, inputs: dict[str, Any], model: dict[str, Any]
) -> dict[str, Any] | None:
    """The PyTorch reference logits the run compares with, or None when ``reference_images`` is 0."""
    if config.reference_images <= 0:
        return None
    return prepare_reference(cache_root, inputs, model, limit=config.reference_images)


def result_name(artifact: str | Path) -> str:
    """The recipe names the result folder after the model: ``<name>_bs<N>`` (atc may add ``_linux_<arch>``)."""
    return re.sub(r"_linux_[a-z0-9_]+$", "", Path(artifact).stem)


def compile_step(
    backend: Backend, onnx: str | Path, batch_size: int, cache_root: str | Path, *, name: str | None = None
) -> dict[str, Any]:
    """Compile (or reuse) the artifact for one batch size, named ``<model stem>_bs<N>`` as in the recipe."""
    onnx = Path(onnx)
    if not onnx.is_file():  # before the cache hashes it
        raise InputError(f"ONNX model {onnx} not found: run the export step (twins pth2onnx) first")
    with in_use(onnx):  # the ONNX entry stays while the compiler reads it (the cache budget skips it)
        return compile_cached(backend, onnx, batch_size, cache_root, name=name or f"{onnx.stem}_bs{batch_size}")


def resolve_chips(backend: Backend, device_ids: tuple[int, ...] | str) -> list[int]:
    """The chips a run may use, checked on the host that plans: there per ``npu-smi info``, ``soc_version=auto``
    readable, the lease folder usable (:func:`twins_tasks.devices.check_chips`); [] for a backend without chips."""
    if not hasattr(backend, "list_chips"):
        return []
    from .devices import check_chips

    chipped: Any = backend  # a backend with chips (Ascend)
    return check_chips(chipped, device_ids)


@contextlib.contextmanager
def on_chip(backend: Backend, device_ids: list[int] | None, purpose: str) -> Iterator[tuple[Backend, dict[str, Any]]]:
    """The backend on a chip leased for the block (:func:`twins_tasks.devices.lease_chip`), and where that is.

    Backends without chips (ONNX Runtime) run as they are. The lease keeps two batch sizes off one chip; it is
    a host-local lock the kernel drops when its holder dies, so a crashed worker loses no chip.
    """
    host = socket.gethostname()
    if not device_ids or not hasattr(backend, "with_device"):
        yield backend, {"host": host, "chip": None, "device": None}
        return
    from .devices import lease_chip

    chipped: Any = backend  # a backend with chips (Ascend): npu_devices, idle, with_device
    with lease_chip(device_ids, purpose=purpose, read_devices=chipped.npu_devices, idle=chipped.idle) as chip:
        yield chipped.with_device(chip), {"host": host, "chip": chip, "device": f"{host}:npu{chip}"}


def chips_for_perf(device_ids: list[int] | None, infer_record: dict[str, Any] | None) -> list[int] | None:
    """Perf prefers the chip that ran the batch size's inference (on the same host), then any of the run's chips.

    Pinning perf to that chip left chips idle while perfs queued for a busy one (on 2 chips, 5 of 6 batch sizes
    once waited for chip 0 while chip 1 sat idle). Each task still holds its chip alone, the artifact and the
    outputs are in the shared work folder, and the recorded device says where perf measured. On another host
    (several NPU hosts on one queue) the run's chips there are tried in order.
    """
    if device_ids and infer_record and infer_record.get("chip") is not None:
        if infer_record.get("host") == socket.gethostname():
            chip = int(infer_record["chip"])
            return [chip, *(c for c in device_ids if c != chip)]
    return device_ids


def infer_step(
    backend: Backend,
    artifact: str | Path,
    bin_path: str | Path,
    batch_size: int,
    result_root: str | Path,
    name: str,
    outfmt: str = "TXT",
    *,
    device_ids: list[int] | None = None,
    purpose: str = "",
    sample_images: int | None = None,
    max_chips: int | None = None,
) -> dict[str, Any]:
    """Run inference into a temporary folder and rename it into place when every output is there.

    With chips (Ascend), the inputs are split over those of ``device_ids`` that are free, at most ``max_chips``
    (None or 0: all of them), and the outputs merged (:func:`twins_tasks.sharding.infer_on_chips`).

    ``sample_images``: infer only the first N inputs (a batch size that does not score the full dataset,
    :meth:`twins_tasks.recipe.RecipeConfig.accuracy_scope`), through :func:`sample_inputs`.
    """
    result_root = Path(result_root)
    result_root.mkdir(parents=True, exist_ok=True)
    source = sample_inputs(bin_path, result_root, sample_images) if sample_images else Path(bin_path)
    partial = f"{name}.partial"  # a plain name: ais_bench (and our validation) reject a leading dot
    shutil.rmtree(result_root / partial, ignore_errors=True)  # a killed earlier attempt's leftovers
    # The bins and the artifact are cache entries: held for the block, the cache budget never evicts them.
    lease = f"{purpose} bs{batch_size} infer".strip()
    with in_use(bin_path, artifact):
        if device_ids and hasattr(backend, "with_device"):
            result, where = infer_on_chips(
                backend,
                Path(artifact),
                str(source),
                batch_size,
                result_root,
                partial,
                outfmt,
                device_ids=device_ids,
                purpose=lease,
                max_chips=max_chips,
            )
        else:
            with on_chip(backend, device_ids, lease) as (on, where):
                # A full disk: "no space left on <folder>", and no half-written output left behind.
                result = infer_checked(on, Path(artifact), str(source), batch_size, result_root, partial, outfmt)
    final = result_root / name
    shutil.rmtree(final, ignore_errors=True)
    os.rename(result_root / partial, final)
    summary = result_root / f"{partial}_summary.json"
    if summary.is_file():
        _rehome_summary(summary, result_root / f"{name}_summary.json", result_root / partial, final)
    record = {**result.to_dict(), **where}
    record["output_dir"] = str(final)
    # Per-batch timing lists and file lists grow with the dataset: keep XComs small.
    record["summary"] = {k: v for k, v in record.get("summary", {}).items() if k not in _BIG_SUMMARY_KEYS}
    log.info(
        "%d outputs in %s (%.1f images/s end to end)", record["num_outputs"], record["output_dir"], record["throughput"]
    )
    return record


SAMPLE_PREFIX = "inputs_first"  # <result folder>/inputs_first<N>: links to the first N inputs


def sample_for(scope: dict[str, Any] | None, batch_size: int) -> int | None:
    """How many images ``batch_size`` infers when it only checks a sample (None: the full dataset), per the plan's
    ``accuracy_scope`` (None: a plan without one, made before it existed: every batch size is full)."""
    if not scope or batch_size not in scope.get("sampled", []):
        return None
    return int(scope["sample_images"])


def sample_inputs(bin_path: str | Path, result_root: str | Path, count: int) -> Path:
    """A folder of links to the first ``count`` inputs of ``bin_path`` in natural order, made once per run
    (``<result folder>/inputs_first<N>``; the sampled batch sizes share it); ``bin_path`` itself when it holds
    no more. Hard links (no copy, and the bins' cache entry may go while they are used); symlinks across
    filesystems. Built under a temporary name and renamed: a concurrent task sees it whole or makes its own."""
    target = Path(result_root) / f"{SAMPLE_PREFIX}{count}"
    if target.is_dir():  # made by another sampled batch size of this run: no listing of 50,000 bins again
        return target
    files = list_inputs(bin_path)
    if count >= len(files):
        return Path(bin_path)
    tmp = Path(result_root) / f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        link_files(files[:count], tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent task's complete folder: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Sample of the first %d of %d inputs: %s", count, len(files), target)
    return target


def _rehome_summary(summary: Path, target: Path, partial: Path, final: Path) -> None:
    """Move the summary JSON to ``target`` with its paths into ``partial`` (the outputs' folder while they were
    written, renamed away since) pointing into ``final``: 50,000 paths into a folder that no longer exists help
    no one who reads it."""
    old, new = str(partial), str(final)

    def moved(value: Any) -> Any:
        if isinstance(value, str):
            return new + value[len(old) :] if value == old or value.startswith(old + os.sep) else value
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        return value

    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):  # not ours to judge here: the backend already read (or reported) it
        os.replace(summary, target)
        return
    data = moved(data)
    if isinstance(data.get("args"), dict) and data["args"].get("output_dirname") == partial.name:
        data["args"]["output_dirname"] = final.name
    write_json_atomic(target, data)
    summary.unlink()


def perf_step(
    backend: Backend,
    artifact: str | Path,
    batch_size: int,
    *,
    loop: int = 20,
    warmup: int = 1,
    rounds: int = 1,
    device_ids: list[int] | None = None,
    purpose: str = "",
) -> dict[str, Any]:
    """Pure performance (ais_bench --loop) in ``rounds`` rounds; the record is the median round's, with the spread.

    One mean of a few loops is as noisy as the host: the regression check compares medians of rounds and treats
    a drop within the measured spread of the two runs as noise.
    """
    results = []
    with in_use(artifact), on_chip(backend, device_ids, f"{purpose} bs{batch_size} perf".strip()) as (on, where):
        for i in range(rounds):
            result = on.perf(Path(artifact), batch_size, loop=loop, warmup=warmup)
            for line in result.summary_lines():
                log.info("%s", line)
            if rounds > 1:
                log.info("bs%d perf round %d/%d: %.2f img/s", batch_size, i + 1, rounds, result.throughput)
            results.append(result)
    throughputs = [r.throughput for r in results]
    median = sorted(results, key=lambda r: r.throughput)[(len(results) - 1) // 2]
    record = {**median.to_dict(), **{k: v for k, v in where.items() if v is not None}}
    mean = statistics.fmean(throughputs)
    record.update(
        rounds=rounds,
        throughput_rounds=throughputs,
        throughput_min=min(throughputs),
        throughput_max=max(throughputs),
        throughput_cv=statistics.pstdev(throughputs) / mean if mean else None,
    )
    return record


def failure_note(failure_dir: str | Path, batch_size: int, step: str) -> Path:
    """Where a failed step of one batch size's chain leaves its error for the accuracy step to record."""
    return Path(failure_dir) / f"bs{batch_size}_{step}.json"


def note_failure(failure_dir: str | Path, batch_size: int, step: str, error: str) -> None:
    write_json_atomic(
        failure_note(failure_dir, batch_size, step), {"batch_size": batch_size, "step": step, "error": error}
    )


def clear_failure(failure_dir: str | Path, batch_size: int, step: str) -> None:
    """A later try of the step succeeded: its earlier failure is no longer the batch size's story."""
    failure_note(failure_dir, batch_size, step).unlink(missing_ok=True)
