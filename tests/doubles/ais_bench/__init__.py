"""Test double for ``python -m ais_bench`` (test equipment only: nothing in the product ships or calls it).

Reproduces the documented behaviour of shared/toolchain-contract.md: the flags and their defaults, exit 2
on argument errors and 1 on a crash, inputs (.bin/.npy, natural order, files per batch = model input size /
file size, the last short batch padded and its padding outputs not written), outputs
``<output>/<output_dirname>/<stem>_0.<fmt>`` (TXT/NPY/BIN), the summary JSON (newer location, or
``sumary.json`` inside the folder with FAKE_AIS_SUMMARY=old) and the "Performance Summary" lines (older
``1000*batchsize(N)`` format, or newer ``1000*batchsize.mean(N)`` with FAKE_AIS_FORMAT=new).

The model is the JSON ``.om`` written by the atc double. Its "logits" are a deterministic function of each
image alone (means of 1000 slices of the input), so outputs do not depend on the batch size, like a real
model's. Compute times are synthetic: FAKE_AIS_MS_PER_IMAGE (default 7.5) ms per image plus 1 ms.

Without ``--output`` nothing is written (like the real tool); with ``--output`` but no ``--output_dirname``
the folder is a timestamp (``%Y_%m_%d-%H_%M_%S``), like the real tool.

Failure modes: FAKE_AIS_CRASH=1 (uncaught exception, exit 1), FAKE_AIS_DROP=1 (the last input's output is
not written, exit 0), FAKE_AIS_SLEEP=seconds (hang). A ``--device`` not below FAKE_NPU_COUNT (default 1)
fails like a missing device. TWINS_DOUBLES_LOG: append argv as a JSON line. Needs numpy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np

log = logging.getLogger("ais_bench")
IMAGE_VALUES = 3 * 224 * 224
NUM_CLASSES = 1000


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ais_bench")
    p.add_argument("--model", "-m", required=True, help="the .om model")
    p.add_argument("--input", "-i", default=None, help="input files or folders, comma-separated")
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--output_dirname", default=None)
    p.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    p.add_argument("--loop", "-l", type=int, default=1)
    p.add_argument("--device", "-d", type=int, default=0)
    p.add_argument("--batchsize", type=int, default=1)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--dymBatch", type=int, default=0)
    p.add_argument("--display_all_summary", type=str2bool, nargs="?", const=True, default=False)
    p.add_argument("--debug", type=str2bool, nargs="?", const=True, default=False)
    return p


def record(argv: list[str]) -> None:
    path = os.environ.get("TWINS_DOUBLES_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"tool": "ais_bench", "argv": argv, "cwd": os.getcwd()}) + "\n")


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_files(spec: str) -> list[str]:
    files: list[str] = []
    for item in (s for s in spec.split(",") if s):
        if os.path.isdir(item):
            names = [n for n in os.listdir(item) if n.lower().endswith((".bin", ".npy"))]
            files += [os.path.join(item, n) for n in sorted(names, key=natural_key)]
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"input path {item} does not exist")
    return files


def load(path: str) -> np.ndarray:
    if path.lower().endswith(".npy"):
        return np.load(path).astype(np.float32).reshape(-1)
    return np.fromfile(path, dtype=np.float32)


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    record(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s", stream=sys.stdout)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dirname is not None and args.output is None:
        parser.error("--output_dirname must be used together with --output")
    log.info("acl init success")
    if int(os.environ.get("FAKE_NPU_COUNT", "1")) <= args.device:
        raise RuntimeError(f"open device {args.device} failed: no such NPU device (fake)")
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
    input_bytes = batch * IMAGE_VALUES * 4
    ms_per_batch = float(os.environ.get("FAKE_AIS_MS_PER_IMAGE", "7.5")) * batch + 1.0

    out_dir = None
    if args.output is not None:
        out_dir = os.path.join(args.output, args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
        os.makedirs(out_dir, exist_ok=True)
        log.info("output path:%s", out_dir)

    for _ in range(args.warmup_count):
        pass
    log.info("warm up %d done", args.warmup_count)

    times: list[float] = []
    filesinfo: dict[str, dict[str, list[str]]] = {}
    if args.input is None:  # pure performance: zero-filled input, as the real tool generates
        for i in range(args.loop * 1):
            times.append(ms_per_batch + 0.01 * (i % 7))
    else:
        files = list_files(args.input)
        if not files:
            raise RuntimeError(f"no .bin/.npy files in {args.input}")
        file_bytes = {os.path.getsize(f) if f.lower().endswith(".bin") else load(f).nbytes for f in files}
        if len(file_bytes) != 1 or input_bytes % next(iter(file_bytes)):
            raise RuntimeError(
                f"input file sizes {sorted(file_bytes)} do not divide the model input size {input_bytes}"
            )
        per_batch = input_bytes // next(iter(file_bytes))
        drop = files[-1] if os.environ.get("FAKE_AIS_DROP") == "1" else None
        for start in range(0, len(files), per_batch):
            group = files[start : start + per_batch]
            padded = group + [group[-1]] * (per_batch - len(group))  # padding outputs are not written
            data = np.concatenate([load(f) for f in padded])
            scores = np.stack([logits(img) for img in data.reshape(batch, IMAGE_VALUES)])
            for _ in range(args.loop):
                times.append(ms_per_batch + 0.01 * (len(times) % 7))
            outfiles = []
            rows_per_file = batch // per_batch
            for k, path in enumerate(group):
                stem = os.path.splitext(os.path.basename(path))[0]
                target = os.path.join(out_dir, f"{stem}_0.{args.outfmt.lower()}") if out_dir else None
                if target and path != drop:
                    write(target, scores[k * rows_per_file : (k + 1) * rows_per_file], args.outfmt)
                    outfiles.append(target)
            filesinfo[str(len(filesinfo))] = {"infiles": group, "outfiles": outfiles}
        log.info("Inference array Processing: %d batches done", len(filesinfo))

    npu = stats(times)
    h2d = stats([0.5 * batch + 0.1] * len(times))
    d2h = stats([0.01] * len(times))
    throughput = 1000.0 * args.batchsize / npu["mean"]
    if out_dir is not None:
        summary = {
            "NPU_compute_time": npu,
            "H2D_latency": h2d,
            "D2H_latency": d2h,
            "throughput": throughput,
            "npu_compute_time_list": times,
            "filesinfo": filesinfo,
            "args": vars(args),
        }
        if os.environ.get("FAKE_AIS_SUMMARY") == "old":
            summary_path = os.path.join(out_dir, "sumary.json")
        else:
            summary_path = out_dir + "_summary.json"
        with open(summary_path, "w") as fh:
            json.dump(summary, fh)
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
    log.info("end to end %d ms", int(sum(times)))
    return 0
