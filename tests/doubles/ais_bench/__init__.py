"""Test double for ``python -m ais_bench`` (test equipment only: nothing in the product ships or calls it).

Reproduces the real frontend, read at Ascend/tools @9d6da90, ``ais-bench_workload/tool/ais_bench/ais_bench/
infer/`` (line numbers approximate, "~"); shared/toolchain-contract.md lists the same facts:

Arguments (``__main__.py`` ``get_args`` ~215-265)
  - ``--outfmt`` only ``NPY``/``BIN``/``TXT`` (choices, ~221): anything else exits 2.
  - ``--loop`` must be a positive integer (``check_positive_integer``, ~176, ~222): ``--loop 0`` exits 2.
  - ``--debug`` and ``--display_all_summary`` take a value (``type=str2bool``, no ``nargs``, ~223, ~239):
    a bare flag exits 2.
  - ``--device`` is an int or a comma list (``check_device_range_valid``, ~196-213); a list runs one
    process per device (``multidevice_run``, ``if type(args.device) == list`` at the end of the file), each
    on its share of the inputs, writing under ``<output_dirname>/device<N>``; exit 0 only if all succeed.
  - ``--batchsize`` defaults to None, then the model's own (``set_session_options`` ~41-43,
    ``try get model batchsize:``).
  - ``--output_dirname`` without ``--output`` raises RuntimeError after parsing (~262-264): exit 1.
Inputs (``io_oprations.py``)
  - A comma list: files if the first entry is a file, else folders, one per model input; a folder count
    that differs from the model's input count is an error (``check_input_parameter`` ~123-146), and so is
    an entry that is neither (``[ERROR] Invalid args. <path>  of --input is invalid``, ~145): exit 1.
  - A folder lists exactly ``.bin .BIN .npy .NPY`` (``utils.py`` ``get_fileslist_from_dir`` ~33-35), in
    natural order with lower-cased text (``utils.py`` ``natural_sort`` ~21-24).
  - Files per batch = model input size / size of the FIRST file (``get_files_count_per_batch`` ~77-85); a
    batch whose files do not add up to the input size fails (``ndata size ... not match``, ~61-63).
  - The short last batch is padded with the batch's FIRST file (``padding_infer_fake_file``, ~13, ~48-50;
    ``utils.py`` ``list_split`` ~12-19); padding outputs are not written (``save_tensors_to_file`` ~189-192).
Outputs
  - ``<output>/<output_dirname>/{basename.split('.')[0]}_{i}.{fmt}`` (``io_oprations.py`` ~193-194): the
    stem stops at the FIRST dot, so ``img.v1.bin`` and ``img.v2.bin`` both write ``img_0.*``.
  - BIN is ``tofile`` and NPY ``np.save`` of the model's output array, in the model's output dtype
    (``utils.py`` ``save_data_to_files`` ~65-76): float16 for a model compiled with ``--output_type=FP16``;
    NPY keeps the shape (1, 1000). TXT is ``%f`` values, single spaces, a trailing space, then newline.
  - A pure-performance run (no ``--input``) with ``--output`` writes the output of its zero-filled input as
    ``pure_infer_data_0.<fmt>`` (``io_oprations.py`` ``pure_infer_fake_file`` ~12; ``__main__.py`` ~304).
Summary (``summary.py``)
  - Only with ``--output``: ``<output>/<dirname>_summary.json`` (``report`` ~100-102). Keys ``filesinfo``
    (one entry per input sample: ``{"0": {"infiles": [...], "outfiles": [...]}}``, ~42-52), ``args`` (the raw
    ``sys.argv`` list, ``__main__.py`` ~340 ``summary.add_args(sys.argv)``), ``NPU_compute_time``,
    ``H2D_latency``, ``D2H_latency`` (``min max mean median percentile(99%) count``, ~70-78), ``throughput``,
    ``npu_compute_time_list``, ``pid`` (~79-81). Older versions wrote ``sumary.json`` inside the folder:
    FAKE_AIS_SUMMARY=old.
  - Printed through Python logging on stdout, format ``[%(levelname)s] %(message)s`` (``utils.py`` ~8); the
    throughput line is ``throughput 1000*batchsize.mean(N)/NPU_compute_time.mean(M): T`` (~96) with
    FAKE_AIS_FORMAT=new, the older ``1000*batchsize(N)`` form otherwise. Inference prints a tqdm progress
    bar on stdout (``tqdm(..., file=sys.stdout, desc='Inference array Processing')``, ``__main__.py`` ~156).

The model is the JSON ``.om`` written by the atc double. Its "logits" are a deterministic function of each
image alone (means of 1000 slices of the input), so outputs do not depend on the batch size, like a real
model's. Compute times are synthetic: FAKE_AIS_MS_PER_IMAGE (default 7.5) ms per image plus 1 ms.

Environment
  - FAKE_AIS_CRASH=1 (uncaught exception, exit 1), FAKE_AIS_DROP=1 (the last input's output is not written,
    exit 0), FAKE_AIS_SLEEP=seconds (hang).
  - TWINS_FAKE_NPUS (or FAKE_NPU_COUNT, default 1): chips 0..N-1, or FAKE_NPU_IDS (e.g. ``2,3``); a ``--device``
    not among them fails like a missing device.
  - FAKE_NPU_LOCK_DIR: while running on device N, hold an exclusive ``flock`` on ``<dir>/device<N>.lock``;
    a second process on the same device fails at once, loudly (exit 1, ``[ERROR] fake NPU device N is
    already in use``). ``holds``/``releases``/``clash`` events go to TWINS_DOUBLES_LOG as tool
    ``events``. This is how tests prove two tasks never share a chip.
  - Realistic times, for the simulation benchmark: TWINS_FAKE_DELAYS=realistic (0.5 s per inference batch,
    0.2 s per perf loop), or FAKE_AIS_BATCH_SECONDS / FAKE_AIS_LOOP_SECONDS; TWINS_FAKE_TIME_SCALE multiplies.
    FAKE_AIS_IMAGES_PER_S (img/s, one number or ``bs:rate,...`` per batch size, e.g. the seed's 310P rates)
    instead makes time proportional to images: a perf loop takes batch/rate, an inference batch its real
    (not padding) files x FAKE_AIS_IMAGES_PER_FILE (default 1: each file stands for that many images) / rate.
  - TWINS_DOUBLES_LOG: append argv as JSON lines, and events as tool ``events``: the chip locks above, and
    ``batch`` (the files of each batch, padding included).
Needs numpy; uses tqdm when it is importable (as the real tool does).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

log = logging.getLogger("ais_bench")
IMAGE_VALUES = 3 * 224 * 224
NUM_CLASSES = 1000
SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
PURE_INFER_FILE = "pure_infer_data"
MODEL_INPUTS = 1  # the atc double's models have one input, like Twins-SVT-L


def str2bool(value: str) -> bool:
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected true, 1, false, 0 with case insensitive.")


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid positive int value")
    return number


def nonnegative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid nonnegative int value")
    return number


def device_ids(value: str) -> int | list[int]:
    ids = [int(v) for v in value.split(",")]
    for number in ids:
        if not 0 <= number <= 255:
            raise argparse.ArgumentTypeError(f"device:{value} is invalid. valid value range is [0, 255]")
    return ids if "," in value else ids[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ais_bench")
    p.add_argument("--model", "-m", required=True, help="the .om model")
    p.add_argument("--input", "-i", default=None, help="input file or dir")
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", type=str, default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=positive_int, default=1)
    p.add_argument("--debug", type=str2bool, default=False)
    p.add_argument("--device", "-d", type=device_ids, default=0)
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--batchsize", type=positive_int, default=None)
    p.add_argument("--display_all_summary", type=str2bool, default=False)
    p.add_argument("--warmup_count", type=nonnegative_int, default=1)
    return p


def record(entry: dict, tool: str = "ais_bench") -> None:
    path = os.environ.get("TWINS_DOUBLES_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"tool": tool, **entry}) + "\n")


def chip_ids() -> list[int]:
    """The host's chips, as the npu-smi double shows them: FAKE_NPU_IDS, else 0..TWINS_FAKE_NPUS-1."""
    if os.environ.get("FAKE_NPU_IDS"):
        return [int(v) for v in os.environ["FAKE_NPU_IDS"].split(",")]
    return list(range(int(os.environ.get("TWINS_FAKE_NPUS") or os.environ.get("FAKE_NPU_COUNT") or "1")))


def delay(kind: str) -> float:
    """Seconds one inference batch ("batch") or one perf loop ("loop") takes; 0 unless asked for."""
    explicit = os.environ.get({"batch": "FAKE_AIS_BATCH_SECONDS", "loop": "FAKE_AIS_LOOP_SECONDS"}[kind])
    if explicit:
        seconds = float(explicit)
    elif os.environ.get("TWINS_FAKE_DELAYS") == "realistic":
        seconds = {"batch": 0.5, "loop": 0.2}[kind]
    else:
        return 0.0
    return seconds * float(os.environ.get("TWINS_FAKE_TIME_SCALE", "1"))


def images_per_s(batch: int) -> float | None:
    """FAKE_AIS_IMAGES_PER_S for this batch size (one rate for all, or ``bs:rate,...``); None when unset."""
    text = os.environ.get("FAKE_AIS_IMAGES_PER_S", "").strip()
    if not text:
        return None
    if ":" not in text:
        return float(text)
    rates = {int(k): float(v) for k, v in (item.split(":") for item in text.split(","))}
    if batch not in rates:
        raise RuntimeError(f"FAKE_AIS_IMAGES_PER_S={text} has no rate for batch size {batch}")
    return rates[batch]


@contextlib.contextmanager
def hold_device(device: int) -> Iterator[None]:
    """An exclusive lock on the fake chip while this process uses it; a clash fails loudly."""
    folder = os.environ.get("FAKE_NPU_LOCK_DIR")
    if not folder:
        yield
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"device{device}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            record({"event": "clash", "device": device, "pid": os.getpid(), "holder": holder}, "events")
            log.error("fake NPU device %d is already in use by %s: two processes on one chip", device, holder)
            raise RuntimeError(f"fake NPU device {device} is already in use by {holder}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        record({"event": "holds", "device": device, "pid": os.getpid(), "at": time.time()}, "events")
        try:
            yield
        finally:
            record({"event": "releases", "device": device, "pid": os.getpid(), "at": time.time()}, "events")
            fh.seek(0)
            fh.truncate()


def natural_sort(names: list[str]) -> list[str]:
    def key(name: str) -> list:
        return [int(part) if part.isdigit() else part.lower() for part in re.split(r"([0-9]+)", name)]

    return sorted(names, key=key)


def list_files(spec: str) -> list[str]:
    """The files of the model's one input, checked as io_oprations.check_input_parameter does."""
    items = spec.split(",")
    if os.path.isfile(items[0]):
        for item in items:
            if not os.path.isfile(item):
                log.error("Invalid input args.--input:%s input[%d]:%s not exist", items, items.index(item), item)
                raise RuntimeError()
        return items
    if os.path.isdir(items[0]):
        if len(items) != MODEL_INPUTS:
            log.error("Invalid args. args input dir num:%d not equal to model inputs num:%d", len(items), MODEL_INPUTS)
            raise RuntimeError()
        names = [os.path.join(items[0], n) for n in os.listdir(items[0]) if n.endswith(SUFFIXES)]
        if not names:
            log.error("%s of input args not find valid file,valid file format:[*.npy *.NPY *.bin *.BIN]", items[0])
            raise RuntimeError()
        return natural_sort(names)
    log.error("Invalid args. %s  of --input is invalid", items[0])
    raise RuntimeError()


def load(path: str) -> np.ndarray:
    if path.endswith((".npy", ".NPY")):
        return np.load(path)
    return np.fromfile(path, dtype=np.int8)  # raw bytes, as the real tool reads them


def nbytes(path: str) -> int:
    return int(load(path).nbytes) if path.endswith((".npy", ".NPY")) else os.path.getsize(path)


def logits(image: np.ndarray) -> np.ndarray:
    """Deterministic per-image scores: the means of 1000 equal slices of the input."""
    usable = (image.size // NUM_CLASSES) * NUM_CLASSES
    return image[:usable].reshape(NUM_CLASSES, -1).mean(axis=1, dtype=np.float64).astype(np.float32)


def write(path: str, array: np.ndarray, outfmt: str) -> None:
    if outfmt == "TXT":
        rows = array.reshape(-1, array.shape[-1])
        with open(path, "w") as fh:
            fh.write("".join(" ".join(f"{v:f}" for v in row) + " \n" for row in rows))
    elif outfmt == "NPY":
        np.save(path, array)
    else:
        array.tofile(path)


def stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "percentile(99%)": float(np.percentile(arr, 99)),
        "count": int(arr.size),
    }


def stats_line(name: str, s: dict[str, float]) -> str:
    return (
        f"{name} (ms): min = {s['min']}, max = {s['max']}, mean = {s['mean']}, median = {s['median']}, "
        f"percentile(99%) = {s['percentile(99%)']}"
    )


def progress(batches: list, desc: str) -> Iterator:
    try:
        from tqdm import tqdm
    except ImportError:  # the real tool needs tqdm; the double runs without it, silently
        return iter(batches)
    return iter(tqdm(batches, file=sys.stdout, desc=desc))


def multidevice(argv: list[str], args: argparse.Namespace) -> int:
    """``--device 0,1``: one process per device on its share of the inputs, as multidevice_run does."""
    devices: list[int] = args.device
    log.info("multidevice:%s run begin", devices)
    shares: list[str | None] = [None] * len(devices)
    if args.input is not None:
        files = list_files(args.input)
        per = -(-len(files) // len(devices))
        shares = [",".join(files[i * per : (i + 1) * per]) or None for i in range(len(devices))]
    base = list(argv)
    for flag in ("--device", "-d", "--input", "-i", "--output_dirname"):
        while flag in base:
            at = base.index(flag)
            del base[at : at + 2]
    procs = []
    for device, share in zip(devices, shares, strict=True):
        sub = [*base, "--device", str(device)]
        if share:
            sub += ["--input", share]
        dirname = os.path.join(args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"), f"device{device}")
        if args.output is not None:
            sub += ["--output_dirname", dirname]
        procs.append(subprocess.Popen([sys.executable, "-m", "ais_bench", *sub]))
    codes = [p.wait() for p in procs]
    result = 0 if all(c == 0 for c in codes) else 1
    log.info("multidevice run end result:%d", result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    record({"argv": argv, "cwd": os.getcwd(), "pid": os.getpid()})
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s", stream=sys.stdout)
    args = build_parser().parse_args(argv)
    if args.output is None and args.output_dirname is not None:
        log.error(
            "parameter --output_dirname cann't be used alone. Please use it together with the parameter --output!\n"
        )
        raise RuntimeError("error bad parameters --output_dirname")
    if isinstance(args.device, list):
        return multidevice(argv, args)
    if args.device not in chip_ids():
        raise RuntimeError(f"open device {args.device} failed: no such NPU device (fake)")
    with hold_device(args.device):
        return run(args)


def run(args: argparse.Namespace) -> int:
    log.info("acl init success")
    log.info("open device %d success", args.device)
    if os.environ.get("FAKE_AIS_SLEEP"):
        time.sleep(float(os.environ["FAKE_AIS_SLEEP"]))
    if os.environ.get("FAKE_AIS_CRASH") == "1":
        raise RuntimeError("fake ais_bench crash (FAKE_AIS_CRASH=1)")
    with open(args.model) as fh:
        om = json.load(fh)  # a real .om is binary: this double only runs the atc double's models
    log.info("load model %s success", args.model)
    batch = om["batch"]
    if om.get("dynamic_batch"):
        if args.dymBatch not in om["dynamic_batch"]:
            raise RuntimeError(f"dymBatch {args.dymBatch} is not one of the model's batch sizes {om['dynamic_batch']}")
        batch = args.dymBatch
    if args.batchsize is None:
        args.batchsize = batch
        log.info("try get model batchsize:%d", batch)
    out_dtype = np.float16 if om.get("output_type") == "FP16" else np.float32
    input_bytes = batch * IMAGE_VALUES * 4
    ms_per_batch = float(os.environ.get("FAKE_AIS_MS_PER_IMAGE", "7.5")) * batch + 1.0

    out_dir = None
    if args.output is not None:
        out_dir = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        os.makedirs(out_dir, exist_ok=True)
        log.info("output path:%s", out_dir)

    if args.input is None:  # pure performance: one zero-filled "file", the real tool's pure_infer_data
        batches = [[PURE_INFER_FILE]]
        per_batch = 1
    else:
        files = list_files(args.input)
        first = nbytes(files[0])
        if first == 0 or input_bytes % first:
            log.error("arg0 tensorsize: %d filesize: %d not match", input_bytes, first)
            raise RuntimeError()
        per_batch = input_bytes // first
        # The short last batch is padded with its own first file; its padding outputs are not written.
        batches = [files[i : i + per_batch] for i in range(0, len(files), per_batch)]
        log.info(
            "get filesperbatch files0 size:%d tensor0size:%d filesperbatch:%d runcount:%d",
            first,
            input_bytes,
            per_batch,
            len(batches),
        )
    log.info("warm up %d done", args.warmup_count)

    times: list[float] = []
    filesinfo: dict[str, dict[str, list[str]]] = {}
    drop = batches[-1][-1] if os.environ.get("FAKE_AIS_DROP") == "1" else None
    pause = delay("loop") * args.loop if args.input is None else delay("batch") * args.loop
    rate = images_per_s(batch)
    per_image = float(os.environ.get("TWINS_FAKE_TIME_SCALE", "1")) / rate if rate else 0.0
    if rate and args.input is None:
        pause = batch * per_image * args.loop
    for index, group in enumerate(progress(batches, "Inference array Processing")):
        if group == [PURE_INFER_FILE]:
            data = np.zeros(input_bytes // 4, dtype=np.float32)
        else:
            padded = group + [group[0]] * (per_batch - len(group))
            record({"event": "batch", "files": padded, "device": args.device}, "events")
            raw = np.concatenate([load(f).reshape(-1).view(np.int8) for f in padded])
            if raw.nbytes != input_bytes:
                log.error("ndata size:%d not match %d", raw.nbytes, input_bytes)
                raise RuntimeError()
            data = raw.view(np.float32)
        scores = np.stack([logits(img) for img in data.reshape(batch, IMAGE_VALUES)]).astype(out_dtype)
        if rate and args.input is not None:  # the real files of this batch, each standing for N images
            pause = len(group) * float(os.environ.get("FAKE_AIS_IMAGES_PER_FILE", "1")) * per_image * args.loop
        time.sleep(pause)
        for _ in range(args.loop):
            times.append(ms_per_batch + 0.01 * (len(times) % 7))
        if out_dir is None:
            continue
        rows_per_file = batch // per_batch
        for k, path in enumerate(group):
            sample_id = index * per_batch + k
            target = os.path.join(out_dir, f"{os.path.basename(path).split('.')[0]}_0.{args.outfmt.lower()}")
            entry = filesinfo.setdefault(str(sample_id), {"infiles": [path], "outfiles": []})
            if path != drop:
                write(target, scores[k * rows_per_file : (k + 1) * rows_per_file], args.outfmt)
                entry["outfiles"].append(target)

    npu = stats(times)
    h2d = stats([0.5 * batch + 0.1] * len(times))
    d2h = stats([0.01] * len(times))
    throughput = 1000.0 * args.batchsize / npu["mean"]
    new = os.environ.get("FAKE_AIS_FORMAT") == "new"
    log.info("-----------------Performance Summary------------------")
    if args.display_all_summary:
        log.info(stats_line("H2D_latency", h2d))
    log.info(stats_line("NPU_compute_time", npu))
    if args.display_all_summary:
        log.info(stats_line("D2H_latency", d2h))
    batch_text = f"batchsize.mean({args.batchsize})" if new else f"batchsize({args.batchsize})"
    log.info("throughput 1000*%s/NPU_compute_time.mean(%s): %s", batch_text, npu["mean"], throughput)
    log.info("------------------------------------------------------")
    if out_dir is not None:
        summary = {
            "filesinfo": filesinfo,
            "args": [sys.argv[0], *sys.argv[1:]],
            "NPU_compute_time": npu,
            "H2D_latency": h2d,
            "D2H_latency": d2h,
            "throughput": throughput,
            "npu_compute_time_list": times,
            "pid": os.getpid(),
        }
        if os.environ.get("FAKE_AIS_SUMMARY") == "old":
            summary_path = os.path.join(out_dir, "sumary.json")
        else:
            summary_path = out_dir + "_summary.json"
        with open(summary_path, "w") as fh:
            json.dump(summary, fh)
    return 0
