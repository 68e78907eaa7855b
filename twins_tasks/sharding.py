"""One batch size's inference over several leased chips, as ``ais_bench --device 0,1`` splits one input list.

The inputs (in ais_bench's natural order) are cut into contiguous slices of whole batches, at most one per
chip of the run, so only the last slice has a short, padded batch: the same batches one chip would run. A
slice is a folder of hard links to its bins (no copy; symlinks across file systems), run by one ais_bench
process on one leased chip into an output folder of its own. Outputs are named by input stem, so the merge
is a rename of each into the one result folder; the slices' summary JSONs become one.

Chips: the task takes every chip of the run that is free when it starts (waiting, as a single lease does,
while none is), and more as they free up while slices are left; a chip with no slice left is released at
once, for another batch size's inference or perf. So a batch size that started on one chip while the others
were busy spreads over them as they finish, and no chip sits idle while slices wait. A batch size that has not
started yet leaves freed chips to one that has and wants more (``ChipLeases.take(defer=True)``; perf does not
wait for it): the batch sizes run wide, one after another, and the run does not end on a long single-chip
tail of a batch size that started narrow while new ones took the freed chips. Each chip is leased
(:mod:`twins_tasks.devices`): never two tasks on one chip, and each tool holds only its own chip's lease.
``max_chips`` caps the slices (1: one chip per batch size, as before the split).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from .backends import Backend
from .devices import LOCK_RETRY_S, ChipLeases, lease_chips
from .errors import InputError, ToolError
from .files import write_json_atomic
from .inference import infer_checked
from .layout import check_output_stems, list_inputs
from .types import InferResult

log = logging.getLogger(__name__)

_STATS = ("NPU_compute_time", "H2D_latency", "D2H_latency")


def slice_inputs(files: Sequence[Path], batch_size: int, parts: int) -> list[list[Path]]:
    """``files`` in at most ``parts`` contiguous slices of whole batches, as even as batches allow."""
    batches = -(-len(files) // batch_size)
    if batches == 0:
        return []
    per = -(-batches // max(1, min(parts, batches))) * batch_size
    return [list(files[i : i + per]) for i in range(0, len(files), per)]


def link_files(files: Iterable[Path], folder: Path) -> None:
    """``folder`` holding a link to each file under its own name: hard links (no copy, and they outlive a cache
    eviction of the originals), symlinks where hard links fail (another file system)."""
    folder.mkdir(parents=True)
    for path in files:
        try:
            os.link(path, folder / path.name)
        except OSError:
            os.symlink(Path(path).resolve(), folder / path.name)


def infer_on_chips(
    backend: Backend,
    artifact: Path,
    inputs: str | Path,
    batch_size: int,
    output: Path,
    output_dirname: str,
    outfmt: str,
    *,
    device_ids: Sequence[int],
    purpose: str,
    max_chips: int | None = None,
    wait_s: float = 3600.0,
) -> tuple[InferResult, dict[str, Any]]:
    """Inference of every input into ``<output>/<output_dirname>``, split over free chips of ``device_ids``.

    :param backend: a backend with chips (``with_device``, ``npu_devices``, ``idle``: Ascend).
    :param max_chips: at most this many slices (chips at once); None or 0: one per chip of ``device_ids``.
    :returns: the merged result and where it ran: ``host``, ``chip`` (the first chip), ``chips`` (every chip
        used, in the order taken), ``device`` (``host:npu0,npu1``) and ``slices`` (chip, images, seconds each).
    """
    if max_chips is not None and (isinstance(max_chips, bool) or not isinstance(max_chips, int) or max_chips < 0):
        raise InputError(f"infer_chips={max_chips!r} must be an integer >= 0 (0: every chip of the run)")
    chipped: Any = backend
    files = list_inputs(inputs)
    check_output_stems(files)  # across slices too: two slices' outputs of one stem would meet in the merge
    parts = min(len(device_ids), max_chips or len(device_ids))
    slices = slice_inputs(files, batch_size, parts) or [files]
    host = socket.gethostname()
    with lease_chips(
        device_ids,
        purpose=purpose,
        most=len(slices),
        defer=True,  # a batch size that holds chips and has slices waiting gets the freed chips first
        read_devices=chipped.npu_devices,
        idle=chipped.idle,
        wait_s=wait_s,
    ) as leases:
        if len(slices) == 1:  # one chip's work: straight into the result folder, as before the split
            chip = leases.held[0]
            with leases.tools_hold(chip):
                result = infer_checked(
                    chipped.with_device(chip), artifact, str(inputs), batch_size, output, output_dirname, outfmt
                )
            info = [{"chip": chip, "images": len(files), "seconds": result.seconds}]
        else:
            result, info = _run_slices(chipped, leases, artifact, slices, batch_size, output, output_dirname, outfmt)
        used = list(dict.fromkeys(leases.used))
    where = {
        "host": host,
        "chip": used[0],
        "chips": used,
        "device": f"{host}:" + ",".join(f"npu{chip}" for chip in used),
        "slices": info,
    }
    return result, where


def _run_slices(
    backend: Any,
    leases: ChipLeases,
    artifact: Path,
    slices: list[list[Path]],
    batch_size: int,
    output: Path,
    output_dirname: str,
    outfmt: str,
) -> tuple[InferResult, list[dict[str, Any]]]:
    """Each slice by one ais_bench on one chip; chips pull slices until none is left, then are released."""
    work = output / f"{output_dirname}.slices"  # in<k>/: links to the slice's bins; out<k>/: its outputs
    shutil.rmtree(work, ignore_errors=True)  # a killed earlier attempt's leftovers
    try:
        for k, part in enumerate(slices):
            link_files(part, work / f"in{k}")
        pending = collections.deque(range(len(slices)))
        lock = threading.Lock()
        failed = threading.Event()
        done: dict[int, tuple[InferResult, int]] = {}

        def run(chip: int) -> None:
            try:
                with leases.tools_hold(chip):
                    on = backend.with_device(chip)
                    while not failed.is_set():
                        with lock:
                            if not pending:
                                break
                            k = pending.popleft()
                        log.info("Slice %d/%d (%d images) on NPU %d", k + 1, len(slices), len(slices[k]), chip)
                        done[k] = (
                            infer_checked(on, artifact, str(work / f"in{k}"), batch_size, work, f"out{k}", outfmt),
                            chip,
                        )
            except BaseException:
                failed.set()  # no further slice starts; those running finish
                raise
            finally:
                leases.release(chip)  # at once: another task may take it

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(slices) + len(leases.candidates)) as pool:
            futures: list[Future[None]] = [pool.submit(run, chip) for chip in leases.held]
            try:
                while True:
                    with lock:
                        left = len(pending)
                    running = [f for f in futures if not f.done()]
                    if not running:
                        break
                    if left and not failed.is_set():  # chips freed by other tasks join while slices wait
                        futures += [pool.submit(run, chip) for chip in leases.more(left)]
                    else:
                        leases.enough()  # every slice has its chip: waiting batch sizes may take the free ones
                    wait(running, timeout=LOCK_RETRY_S, return_when=FIRST_COMPLETED)
            except BaseException:
                failed.set()  # e.g. npu-smi failed while looking for more chips: the running slices finish
                raise
        for future in futures:
            future.result()  # the first slice's error, as a single-chip inference would raise it
        seconds = time.perf_counter() - start
        final = output / output_dirname
        summary = _merge(work, final, slices, [done[k][0] for k in range(len(slices))], batch_size)
        if summary:
            write_json_atomic(output / f"{output_dirname}_summary.json", summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    count = sum(len(part) for part in slices)
    info = [
        {"chip": done[k][1], "images": len(slices[k]), "seconds": round(done[k][0].seconds, 3)}
        for k in range(len(slices))
    ]
    log.info(
        "%d slices over NPU %s: %d images in %.1f s",
        len(slices),
        ",".join(map(str, leases.used)),
        count,
        seconds,
    )
    big = ("filesinfo", "npu_compute_time_list")
    return (
        InferResult(
            output_dir=str(final),
            num_inputs=count,
            num_outputs=count,
            batch_size=batch_size,
            seconds=seconds,
            throughput=count / seconds if seconds > 0 else 0.0,
            summary={k: v for k, v in summary.items() if k not in big},
        ),
        info,
    )


def _merge(
    work: Path, final: Path, slices: list[list[Path]], results: list[InferResult], batch_size: int
) -> dict[str, Any]:
    """Rename every slice's outputs into ``final`` (each name once: a second is an error, never an overwrite)
    and merge their summaries: one ``filesinfo`` in input order with the original inputs and the final
    outputs, the compute-time list and its statistics over all slices, each slice's own figures under
    ``slices``."""
    final.mkdir(parents=True, exist_ok=True)
    for k in range(len(slices)):
        for entry in os.scandir(work / f"out{k}"):
            if entry.name == "sumary.json":  # an older ais_bench's summary inside the folder: merged below
                continue
            target = final / entry.name
            if target.exists():
                raise ToolError(f"two slices of {final.name} wrote {entry.name}: outputs would overwrite each other")
            os.rename(entry.path, target)
    parts = [r.summary for r in results]
    if not any(parts):
        return {}
    merged: dict[str, Any] = {}
    originals = {path.name: str(path) for part in slices for path in part}
    filesinfo: dict[str, Any] = {}
    for k, part in enumerate(parts):
        out, ins = str(work / f"out{k}") + os.sep, str(work / f"in{k}") + os.sep
        entries = (part.get("filesinfo") or {}).items()
        for _, entry in sorted(entries, key=lambda item: int(item[0]) if str(item[0]).isdigit() else 0):
            filesinfo[str(len(filesinfo))] = {
                "infiles": [originals.get(Path(p).name, p) if p.startswith(ins) else p for p in entry["infiles"]],
                "outfiles": [os.path.join(final, p[len(out) :]) if p.startswith(out) else p for p in entry["outfiles"]],
            }
    if filesinfo:
        merged["filesinfo"] = filesinfo
    times = [t for part in parts for t in part.get("npu_compute_time_list") or []]
    if times:
        merged["npu_compute_time_list"] = times
    for key in _STATS:
        found = [part[key] for part in parts if isinstance(part.get(key), dict)]
        if found:
            merged[key] = _stats(times) if key == "NPU_compute_time" and times else _merged_stats(found)
    mean = (merged.get("NPU_compute_time") or {}).get("mean")
    if mean:  # ais_bench's figure: one chip's images/s, 1000 * batch size / mean batch time
        merged["throughput"] = 1000.0 * batch_size / mean
    first = parts[0]
    for key in ("args", "pid"):
        if key in first:
            merged[key] = first[key]
    merged["slices"] = [
        {k: v for k, v in part.items() if k not in ("filesinfo", "npu_compute_time_list")} for part in parts
    ]
    return merged


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * (len(ordered) - 1))))]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "percentile(99%)": p99,
        "count": len(ordered),
    }


def _merged_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of several slices without their samples: min, max, count and mean exact; the median and the
    99th percentile the slices' count-weighted means (an estimate; each slice's own stay under ``slices``)."""
    counts = [float(p.get("count") or 0) for p in parts]
    total = sum(counts) or float(len(parts))
    weights = [c / total for c in counts] if sum(counts) else [1 / len(parts)] * len(parts)

    def weighted(key: str) -> float:
        return sum(w * float(p.get(key) or 0.0) for w, p in zip(weights, parts, strict=True))

    return {
        "min": min(float(p.get("min", 0.0)) for p in parts),
        "max": max(float(p.get("max", 0.0)) for p in parts),
        "mean": weighted("mean"),
        "median": weighted("median"),
        "percentile(99%)": weighted("percentile(99%)"),
        "count": int(sum(counts)),
    }
