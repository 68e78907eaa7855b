"""ONNX Runtime backend vs PyTorch eager on twins_svt_large, side by side in one run.

Builds a RANDOMLY INITIALISED timm ``twins_svt_large`` (speed does not depend on the weights), exports it
to ONNX (TorchScript exporter, dynamic batch, fused attention off) in a temp folder, compiles it with
``OnnxRuntimeBackend`` per batch size, then measures PyTorch eager fp32 (``torch.inference_mode``, torch
threads = cores) and ``backend.perf`` with the same loop and warmup counts. Measurements alternate between
the two for ``--rounds`` rounds and each side keeps its best round, so a burst of load from another process
hurts neither side more than the other. Goal: ONNX Runtime >= 1.8x PyTorch at batch size 4.

    .venv/bin/python benchmarks/bench_backends.py [--batch-sizes 1,4] [--loop 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend, cpu_model_name, usable_cores  # noqa: E402
from twins_tasks.perf import PerfResult  # noqa: E402

TARGET_BS = 4
TARGET_RATIO = 1.8


def build_model():
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("twins_svt_large", pretrained=False).eval()
    for module in model.modules():  # 5-D SDPA does not export with the TorchScript exporter
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def export(model, path: Path) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17, dynamo=False)
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
    parser.add_argument("--rounds", type=int, default=3, help="alternating torch/ORT rounds; best counts")
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch and ORT threads (cores)")
    parser.add_argument("--workdir", default=None, help="keep the ONNX model and artifacts here (default: temp)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    backend = OnnxRuntimeBackend(threads=args.threads)
    print(f"CPU: {cpu_model_name()}, {usable_cores()} cores; torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), onnxruntime {ort.__version__} ({backend.threads} threads, {','.join(backend.providers)})")
    print(f"Model: twins_svt_large with RANDOM weights (generated; speed only); loop {args.loop}, warmup "
          f"{args.warmup}, best of {args.rounds} alternating rounds")

    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = build_model()
        onnx_path = work / "twins_svt_large.onnx"
        if not onnx_path.is_file():
            print(f"exported ONNX in {export(model, onnx_path):.1f} s")
        rows = []
        for bs in batch_sizes:
            compiled = backend.compile(onnx_path, bs, work)
            diff = parity(model, Path(compiled.artifact), bs, backend)
            best_torch = best_ort = None
            for _ in range(args.rounds):
                t = torch_perf(model, bs, args.loop, args.warmup)
                o = backend.perf(Path(compiled.artifact), bs, loop=args.loop, warmup=args.warmup)
                print(f"  bs {bs}: torch {t.throughput:.2f} img/s, onnxruntime {o.throughput:.2f} img/s "
                      f"(ratio {o.throughput / t.throughput:.2f})", flush=True)
                best_torch = t if best_torch is None or t.throughput > best_torch.throughput else best_torch
                best_ort = o if best_ort is None or o.throughput > best_ort.throughput else best_ort
            rows.append((bs, best_torch, best_ort, diff, compiled.compile_seconds))

    print()
    print("| batch | torch eager img/s | onnxruntime img/s | ratio | target | result | max abs diff | compile s |")
    print("|------:|------------------:|------------------:|------:|-------:|:------:|-------------:|----------:|")
    failed = False
    for bs, t, o, diff, compile_s in rows:
        ratio = o.throughput / t.throughput
        if bs == TARGET_BS:
            ok = ratio >= TARGET_RATIO
            failed |= not ok
            target, result = f">={TARGET_RATIO}x", "PASS" if ok else "FAIL"
        else:
            target, result = "-", "-"
        print(f"| {bs:>5} | {t.throughput:>17.2f} | {o.throughput:>17.2f} | {ratio:>5.2f} | {target:>6} | "
              f"{result:^6} | {diff:>12.2e} | {compile_s:>9.1f} |")
    if TARGET_BS not in batch_sizes:
        print(f"(no target check: batch size {TARGET_BS} was not measured)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
