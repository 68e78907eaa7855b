"""Scale benchmark: N generated images through every stage of the recipe, sizes side by side in one run.

For each N (default 1,000 / 5,000 / 20,000 / 50,000; ``--sizes``) ``twins make-sample`` writes N pictures
(50 per class: 1,000 classes at 50k, fewer at small N; generated, not ImageNet), then the recipe's steps run in
this process in ``twins run``'s order (twins_tasks.run.run_recipe's calls, timed one by one) with
``--backend ascend`` on the Ascend contract doubles (tests/doubles, no delay, one fake chip): preprocess,
compile, infer per batch size, perf (1 loop, 1 round: a fixed cost, not per image), postprocess/accuracy,
record (results DB + report), then retention with the default policy. The ONNX export of twins_svt_large
(random weights) runs once before the sizes, into the shared work dir's cache, and is not a per-N stage.

Per stage: seconds, user and system CPU seconds (this process and the children it reaps: tools, pool workers),
images/s, peak memory of the process tree (PSS, summed: forked workers share pages; sampled from /proc every 0.5 s
by a separate process), disk used and files created. Inference and postprocess read what the step before wrote
(the bins: 28.7 GiB at 50k, more than a 23 GiB machine's page cache; the outputs, pushed out by five more batch
sizes' reads): before each of them their inputs are dropped from the page cache (sync, then POSIX_FADV_DONTNEED),
so every N reads from storage as the nightly run does at 50k. Then the growth exponent of each stage between sizes
(log-log slope) of wall time, user CPU and system CPU. The goal, <= 1.05 between the two largest sizes (where
fixed costs no longer flatter it), is held on user CPU, the work of the code (ours and the doubles'). Wall time
adds the storage's read rate, and system CPU the kernel's page reclaim once the data outgrows RAM (at 50k every
read must first evict): both are the machine's, and shown. A stage under 1 user CPU s there is shown, not held.
Last, what a run leaves on disk after retention. Exits 1 when a goal is missed.

    nice -n 19 .venv/bin/python benchmarks/bench_scale.py [--sizes 1000,5000] [--batch-sizes 1,64]
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.doubles.helpers import FAKE_VARS, SET_ENV  # noqa: E402
from twins_tasks.backends import get_backend  # noqa: E402
from twins_tasks.constants import DEFAULT_BATCH_SIZES  # noqa: E402
from twins_tasks.export import prepare_model  # noqa: E402
from twins_tasks.files import create_run_dir  # noqa: E402
from twins_tasks.preprocess.inputs import prepare_inputs  # noqa: E402
from twins_tasks.recipe import BackendSettings, RecipeConfig  # noqa: E402
from twins_tasks.report import write_report  # noqa: E402
from twins_tasks.results import collect_rows, record_results  # noqa: E402
from twins_tasks.retention import apply_retention, disk_size, own_run_folder  # noqa: E402
from twins_tasks.sample import GENERATED_NOTE, make_sample  # noqa: E402
from twins_tasks.steps import chips_for_perf, compile_step, infer_step, perf_step, plan_run, result_name  # noqa: E402
from twins_tasks.store import ResultsStore, new_run_uid  # noqa: E402
from twins_tasks.types import RetentionPolicy  # noqa: E402

GOAL_EXPONENT = 1.05
MIN_SECONDS = 1.0  # a stage shorter than this at the largest N is not held to the growth goal (timer noise)
PER_CLASS = 50  # ImageNet val: 50 images per class
MIB = 2**20
SAMPLE_S = 0.5  # smaps_rollup of a process with torch loaded is costly to read: every 0.1 s took ~20% of a core


def use_doubles(lease_dir: Path) -> None:
    """The Ascend contract doubles, no delay, one fake chip; no FAKE_* knob of the caller's shell leaks in."""
    for var in FAKE_VARS:
        os.environ.pop(var, None)
    os.environ["TWINS_FAKE_NPUS"] = "1"
    os.environ["TWINS_LEASE_DIR"] = str(lease_dir)


def recipe(dataset: Path, batch_sizes: tuple[int, ...], policy: RetentionPolicy | None = None) -> RecipeConfig:
    """`twins run --backend ascend --random-init` on the doubles; perf 1 loop x 1 round (fixed cost), no reference."""
    return RecipeConfig(
        dataset_path=str(dataset),
        random_init=True,
        backend=BackendSettings(name="ascend", cann_env=str(SET_ENV), soc_version="Ascend310P3"),
        batch_sizes=batch_sizes,
        perf_loops=1,
        perf_rounds=1,
        reference_images=0,
        retention=policy or RetentionPolicy(),
    )


def tree(path: Path) -> tuple[int, int]:
    """(bytes on disk, files) under ``path``."""
    files = sum(len(names) for _, _, names in os.walk(path)) if path.is_dir() else int(path.exists())
    return disk_size(path), files


def _pss_kib(pid: str) -> int:
    """Proportional set size: forked workers share their parent's pages, which RSS would count in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_kib(root: int, skip: int) -> int:
    """Memory of ``root`` and all its descendants (preprocess workers, the doubles) but ``skip``: PSS, summed."""
    children: dict[str, list[str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == str(skip):
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [str(root)]
    while todo:
        pid = todo.pop()
        total += _pss_kib(pid)
        todo += children.get(pid, [])
    return total


def _sample(conn: Connection, root: int) -> None:
    """The sampler process: on each "start", the tree's peak PSS every SAMPLE_S until "stop", then send it."""
    me = os.getpid()
    while conn.recv() == "start":
        peak = tree_pss_kib(root, me)
        while not conn.poll(SAMPLE_S):
            peak = max(peak, tree_pss_kib(root, me))
        conn.recv()
        conn.send(peak)


class RssSampler:
    """Samples the benchmark's process tree from a separate process, forked before anything else: a sampler
    thread would make this process multi-threaded, and its worker pools would then start from a forkserver
    (preprocess.workers.worker_context), whose workers' CPU time this process never reaps (os.times)."""

    def __init__(self) -> None:
        self.conn, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_sample, args=(theirs, os.getpid()), daemon=True
        )
        self.process.start()

    def start(self) -> None:
        self.conn.send("start")

    def stop(self) -> int:
        """Peak PSS since :meth:`start`, KiB."""
        self.conn.send("stop")
        return int(self.conn.recv())


SAMPLER: RssSampler | None = None


@dataclass
class Stage:
    name: str
    images: int
    seconds: float = 0.0
    user: float = 0.0  # user CPU seconds of this process and the children it reaped (tools, pool workers)
    sys: float = 0.0  # their system CPU seconds: the kernel's work for them, page reclaim under memory pressure too
    peak_rss: int = 0  # bytes (PSS of the process tree)
    disk: int = 0  # bytes written by the stage
    files: int = 0


def _cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process and its reaped children."""
    t = os.times()
    return t.user + t.children_user, t.system + t.children_system


def one_thread(wait_s: float = 10.0) -> None:
    """Wait for other threads to end (a tool's timeout Timer, cancelled, ends a moment later), so that the stage's
    pools fork as in ``twins run``; an AssertionError naming them if they do not."""
    deadline = time.monotonic() + wait_s
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not others, f"threads still running: {others}: the stage's pools would start from a forkserver"


@contextmanager
def measured(stage: Stage, written: Callable[[], tuple[int, int]] | None = None) -> Iterator[Stage]:
    """Time ``stage`` (wall and CPU), sample its peak PSS, and note what ``written`` says it left on disk."""
    assert SAMPLER is not None
    one_thread()
    SAMPLER.start()
    (user, system), start = _cpu(), time.perf_counter()
    try:
        yield stage
    finally:
        stage.seconds += time.perf_counter() - start
        now = _cpu()
        stage.user += now[0] - user
        stage.sys += now[1] - system
        stage.peak_rss = max(stage.peak_rss, SAMPLER.stop() * 1024)
        if written:
            stage.disk, stage.files = written()


def evict(paths: list[Path]) -> None:
    """Drop ``paths``' files from the page cache (no root needed): written pages must reach the disk first."""
    os.sync()
    for root in paths:
        for folder, _, names in os.walk(root):
            for name in names:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def export_once(cache_root: Path) -> dict[str, Any]:
    """The ONNX model (twins_svt_large, random weights), exported once into the work dir's cache."""
    return prepare_model(cache_root, random_init=True, seed=0)


def run_size(
    n: int, base: Path, work: Path, batch_sizes: tuple[int, ...], store: ResultsStore, db: Path
) -> tuple[list[Stage], dict[str, int]]:
    """Every stage for N images; and what the run leaves on disk after retention (default policy)."""
    classes = max(1, min(1000, n // PER_CLASS))
    data = base / f"val_{n}"
    stages: list[Stage] = []

    def stage(name: str) -> Stage:
        stages.append(Stage(name, n))
        return stages[-1]

    with measured(stage("make-sample"), lambda: tree(data)):
        made = len(make_sample(data, classes, -(-n // classes), seed=n))
    assert made >= n, made
    for s in stages:
        s.images = made
    config = recipe(data, batch_sizes)
    run_key = f"scale-{n}"
    plan = plan_run(config, work_dir=work, run_key=run_key, store=store, run_uid=new_run_uid())
    run_dir = Path(plan["run_dir"])
    create_run_dir(run_dir.parent, run_dir.name)
    owner = own_run_folder(run_dir)
    backend = get_backend(plan["backend"], **plan["backend_options"])
    cache = Path(plan["cache_dir"])
    before_bins = set((cache / "bins").glob("*"))

    def new_bins() -> tuple[int, int]:
        return _trees(sorted(set((cache / "bins").glob("*")) - before_bins))

    with measured(stage("preprocess"), new_bins):
        inputs = prepare_inputs(config.dataset_path, cache)
    with measured(stage("preprocess, cached check")):
        prepare_inputs(config.dataset_path, cache)
    model = prepare_model(cache, random_init=True, seed=0)  # reused: exported once, before the sizes
    records: dict[str, list[dict[str, Any] | None]] = {"compile": [], "infer": [], "perf": []}
    for bs in batch_sizes:
        compiled = compile_step(backend, model["onnx"], bs, str(cache))
        records["compile"].append(compiled)
        name = result_name(compiled["artifact"])
        result = Path(plan["result_dir"])
        owned = [result / name, result / f"{name}_summary.json"]  # its outputs and its ais_bench summary
        evict([Path(inputs["bin_path"])])
        with measured(stage(f"infer bs{bs}"), lambda owned=owned: _trees(owned)):
            inferred = infer_step(
                backend,
                compiled["artifact"],
                inputs["bin_path"],
                bs,
                plan["result_dir"],
                name,
                config.outfmt,
                device_ids=plan["device_ids"],
                purpose=run_key,
            )
        records["infer"].append(inferred)
        records["perf"].append(
            perf_step(
                backend,
                compiled["artifact"],
                bs,
                loop=1,
                rounds=1,
                device_ids=chips_for_perf(plan["device_ids"], inferred),
            )
        )
    evict([Path(plan["result_dir"])])
    with measured(stage("postprocess/accuracy")):
        rows = collect_rows(plan["batch_sizes"], records, inputs, None, plan["failure_dir"], plan["accuracy_scope"])
    assert all(r.get("error") is None for r in rows), [r.get("error") for r in rows]
    with measured(stage("record"), lambda: tree(run_dir / "report.md")):
        recorded = record_results(
            store,
            config,
            run_key=run_key,
            source="cli",
            inputs=inputs,
            model=model,
            backend_description=plan["backend_description"],
            rows=rows,
            run_uid=plan["run_uid"],
        )
        write_report(store, run_key, None, run_dir)
    assert recorded, recorded
    owner.close()
    with measured(stage("retention")):
        report = apply_retention(work, store, RetentionPolicy())
    outputs = tree(run_dir / "result")
    folder = tree(run_dir)
    bins = new_bins()
    left = {
        "run folder (outputs kept: among the last 3)": folder[0],
        "run folder files": folder[1],
        "run folder once its outputs age out": folder[0] - outputs[0],
        "run folder files once aged out": folder[1] - outputs[1],
        "bins cache entry": bins[0],
        "bins cache files": bins[1],
        "cache total after retention": report.cache_size,
        "results DB (all runs so far)": disk_size(db),
    }
    return stages, left


def _trees(paths: list[Path]) -> tuple[int, int]:
    sizes = [tree(p) for p in paths]
    return sum(x[0] for x in sizes), sum(x[1] for x in sizes)


def total_stage(name: str, parts: list[Stage]) -> Stage:
    """One stage made of several (every batch size's inference): times, images, disk and files add up."""
    return Stage(
        name,
        images=sum(p.images for p in parts),
        seconds=sum(p.seconds for p in parts),
        user=sum(p.user for p in parts),
        sys=sum(p.sys for p in parts),
        peak_rss=max(p.peak_rss for p in parts),
        disk=sum(p.disk for p in parts),
        files=sum(p.files for p in parts),
    )


def slope(x0: float, y0: float, x1: float, y1: float) -> float:
    """log-log slope: 1 = linear."""
    if min(x0, y0, x1, y1) <= 0 or x0 == x1:
        return float("nan")
    return math.log(y1 / y0) / math.log(x1 / x0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,20000,50000", help="image counts (comma-separated)")
    parser.add_argument(
        "--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)), help="default: the recipe's six"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (its path is printed)")
    args = parser.parse_args(argv)
    global SAMPLER
    SAMPLER = RssSampler()  # first: forked while this process is small and has one thread
    sizes = sorted(int(s) for s in args.sizes.split(","))
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    logging.basicConfig(level=logging.WARNING)

    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work = base / "work"
    use_doubles(base / "leases")
    store = ResultsStore(f"sqlite:///{base / 'results.db'}")
    print(
        f"sizes {sizes}, batch sizes {list(batch_sizes)}, Ascend doubles (no delay, 1 fake chip); {os.cpu_count()} "
        f"cores; {GENERATED_NOTE}; temp {base}",
        flush=True,
    )
    start = time.perf_counter()
    export_once(work / "cache")
    print(f"ONNX export (once, not per N): {time.perf_counter() - start:.0f} s", flush=True)
    results: dict[int, list[Stage]] = {}
    left: dict[int, dict[str, int]] = {}
    try:
        for n in sizes:
            results[n], left[n] = run_size(n, base, work, batch_sizes, store, base / "results.db")
            total = sum(s.seconds for s in results[n])
            print(f"  N={n}: {total:.0f} s over all stages", flush=True)
            # Measured: this size's images, bins and outputs go (50k: 28 GiB of bins), the disk is shared.
            shutil.rmtree(base / f"val_{n}", ignore_errors=True)
            for leftover in [*(work / "cache" / "bins").glob("*"), work / "runs" / f"scale-{n}" / "result"]:
                shutil.rmtree(leftover, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    names = [s.name for s in results[sizes[0]]]
    print()
    print(
        "| stage | "
        + " | ".join(f"N={n}: s, user s, sys s, img/s, peak PSS MiB, disk MiB, files" for n in sizes)
        + " | growth: wall | growth: user CPU (held) | growth: sys CPU |"
    )
    print("|---|" + "---|" * len(sizes) + "---|---|---|")
    failed = []
    infers = [i for i, name in enumerate(names) if name.startswith("infer bs")]
    if len(infers) > 1:  # the stage is inference over every batch size; each one's row is shown as detail
        for n in sizes:
            parts = [results[n][i] for i in infers]
            results[n].insert(infers[0], total_stage("infer, all batch sizes", parts))
        names.insert(infers[0], "infer, all batch sizes")
    for i, name in enumerate(names):
        cells = []
        for n in sizes:
            s = results[n][i]
            cells.append(
                f"{s.seconds:.1f}, {s.user:.1f}, {s.sys:.1f}, {s.images / s.seconds:,.0f}, {s.peak_rss / MIB:,.0f}, "
                f"{s.disk / MIB:,.1f}, {s.files:,}"
            )
        pairs = list(zip(sizes, sizes[1:], strict=False))
        walls = [slope(a, results[a][i].seconds, b, results[b][i].seconds) for a, b in pairs]
        cpus = [slope(a, results[a][i].user, b, results[b][i].user) for a, b in pairs]
        kernel = [slope(a, results[a][i].sys, b, results[b][i].sys) for a, b in pairs]
        # Held on user CPU, the work the code does; wall and system CPU add the machine's storage and page reclaim
        # (module docstring). Under MIN_SECONDS of user CPU at the largest size: timer noise and fixed costs.
        # Each batch size's inference is ~40 user CPU s at 50k, and varied +-15% from run to run on our VM: held
        # together (the stage), each one shown.
        detail = len(infers) > 1 and name.startswith("infer bs")
        held = results[sizes[-1]][i].user >= MIN_SECONDS and not detail
        ok = not cpus or not held or not cpus[-1] > GOAL_EXPONENT
        if not ok:
            failed.append(name)
        mark = "" if ok else " FAIL"
        mark += "" if held or detail else f" (under {MIN_SECONDS:.0f} user CPU s: not held)"
        mark += " (detail: not held)" if detail else ""
        wall = " / ".join(f"{e:.2f}" for e in walls) or "-"
        cpu = " / ".join(f"{e:.2f}" for e in cpus) or "-"
        sys_ = " / ".join(f"{e:.2f}" for e in kernel) or "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {wall} | {cpu}{mark} | {sys_} |")
    print()
    print("What a run leaves on disk after retention (default policy: outputs of the last 3 runs kept):")
    print("| | " + " | ".join(f"N={n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for key in left[sizes[0]]:
        unit = "files" in key
        cells = [f"{left[n][key]:,}" if unit else f"{left[n][key] / MIB:,.1f} MiB" for n in sizes]
        print(f"| {key} | " + " | ".join(cells) + " |")
    print(
        f"\ngrowth exponent of user CPU time between the two largest sizes <= {GOAL_EXPONENT} for every stage: "
        + ("met" if not failed else f"MISSED ({', '.join(failed)})")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
