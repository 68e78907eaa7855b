"""ONNX Runtime backend vs PyTorch eager on twins_svt_large, side by side in one run.

Builds a RANDOMLY INITIALISED timm ``twins_svt_large`` (speed does not depend on the weights) and exports
it exactly as ``twins pth2onnx --random-init`` does (``twins_tasks.export``: TorchScript exporter, the
recipe's opset 11, dynamic batch) in a temp folder, compiles it with ``OnnxRuntimeBackend`` per batch size,
then measures PyTorch eager fp32 (the timm model as timm ships it, fused attention as timm defaults,
``torch.inference_mode``, torch threads = cores) and ``backend.perf`` with the same loop and warmup counts.
Measurements alternate between the two for ``--rounds`` rounds; the table shows each side's median round
and the median of the per-round ratios, so neither a burst of load from another process nor one lucky
round decides the result. Goal: ONNX Runtime >= 1.8x PyTorch at batch size 4.

    .venv/bin/python benchmarks/bench_backends.py [--batch-sizes 1,4] [--loop 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend, cpu_model_name, usable_cores
from twins_tasks.types import PerfResult

TARGET_BS = 4
TARGET_RATIO = 1.8


def build_model():
    """The pipeline's random-init model (``twins_tasks.export.load_model``), with timm's default attention."""
    from timm.layers import use_fused_attn

    from twins_tasks.export import load_model

    model, _ = load_model(random_init=True, seed=0)
    fused = use_fused_attn()  # the export turns fused attention off; eager PyTorch as shipped has timm's default
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused
    return model


def export(path: Path) -> float:
    """``twins pth2onnx --random-init --seed 0``: the ONNX model the pipeline compiles."""
    from twins_tasks.export import export_onnx

    start = time.perf_counter()
    export_onnx(path, random_init=True, seed=0)
    return time.perf_counter() - start


def torch_perf(model, batch_size: int, loop: int, warmup: int) -> PerfResult:
    import torch

    x = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    latencies = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(loop):
            t0 = time.perf_counter()
            model(x)
            latencies.append((time.perf_counter() - t0) * 1000.0)
    return PerfResult.from_latencies(latencies, batch_size, backend="torch-eager")


def parity(model, artifact: Path, batch_size: int, backend: OnnxRuntimeBackend) -> float:
    """Max |ORT - torch| on one random batch: a speed win that changes the numbers is no win."""
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(1).standard_normal((batch_size, 3, 224, 224), dtype=np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(artifact), providers=backend.providers)
    return float(np.abs(session.run(None, {"input": x})[0] - expected).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated (default 1,4)")
    parser.add_argument("--loop", type=int, default=10, help="timed runs per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating torch/ORT rounds (default 5); medians count")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch and ORT threads (cores)")
    parser.add_argument("--workdir", default=None, help="keep the ONNX model and artifacts here (default: temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    backend = OnnxRuntimeBackend(threads=args.threads)
    print(
        f"CPU: {cpu_model_name()}, {usable_cores()} cores; torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), onnxruntime {ort.__version__} ({backend.threads} threads, {','.join(backend.providers)})"
    )
    print(
        f"Model: twins_svt_large with RANDOM weights (generated; speed only); loop {args.loop}, warmup "
        f"{args.warmup}, {args.rounds} alternating rounds"
    )

    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        onnx_path = work / "twins_svt_large.onnx"
        if not onnx_path.is_file():
            print(f"exported ONNX in {export(onnx_path):.1f} s")
        model = build_model()
        rows = []
        for bs in batch_sizes:
            compiled = backend.compile(onnx_path, bs, work)
            diff = parity(model, Path(compiled.artifact), bs, backend)
            torch_rates, ort_rates = [], []
            for round_no in range(1, args.rounds + 1):
                t = torch_perf(model, bs, args.loop, args.warmup)
                o = backend.perf(Path(compiled.artifact), bs, loop=args.loop, warmup=args.warmup)
                torch_rates.append(t.throughput)
                ort_rates.append(o.throughput)
                print(
                    f"  bs {bs} round {round_no}/{args.rounds}: torch {t.throughput:.2f} img/s, onnxruntime "
                    f"{o.throughput:.2f} img/s (ratio {o.throughput / t.throughput:.2f})",
                    flush=True,
                )
            ratios = [o / t for t, o in zip(torch_rates, ort_rates, strict=False)]
            rows.append(
                (
                    bs,
                    median(torch_rates),
                    median(ort_rates),
                    median(ratios),
                    min(ratios),
                    diff,
                    compiled.compile_seconds,
                )
            )

    print()
    print("Medians over the rounds; 'ratio' is the median of the per-round ratios, 'worst' the lowest one.")
    print(
        "| batch | torch eager img/s | onnxruntime img/s | ratio | worst | target | result | max abs diff | compile s |"
    )
    print(
        "|------:|------------------:|------------------:|------:|------:|-------:|:------:|-------------:|----------:|"
    )
    failed = False
    for bs, torch_rate, ort_rate, ratio, worst, diff, compile_s in rows:
        if bs == TARGET_BS:
            ok = ratio >= TARGET_RATIO
            failed |= not ok
            target, result = f">={TARGET_RATIO}x", "PASS" if ok else "FAIL"
        else:
            target, result = "-", "-"
        print(
            f"| {bs:>5} | {torch_rate:>17.2f} | {ort_rate:>17.2f} | {ratio:>5.2f} | {worst:>5.2f} | {target:>6} | "
            f"{result:^6} | {diff:>12.2e} | {compile_s:>9.1f} |"
        )
    if TARGET_BS not in batch_sizes:
        print(f"(no target check: batch size {TARGET_BS} was not measured)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
