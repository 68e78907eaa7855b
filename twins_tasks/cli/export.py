"""``twins pth2onnx``: the recipe's Twins_pth2onnx.py (checkpoint -> ONNX, with the parity check)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..constants import DEFAULT_OPSET
from ..export import export_onnx, parity_line
from ..files import check_output_file
from .arguments import add_weights_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pth2onnx",
        help="export the checkpoint to ONNX and check it against PyTorch",
        description="Recipe step Twins_pth2onnx.py: build the model, load --resume strictly, "
        "export ONNX (input 'input' (N,3,224,224), output 'output' (N,1000), "
        "dynamic batch), run onnx.checker and an ONNX Runtime parity check.",
    )
    add_weights_arguments(p)
    p.add_argument("--output", type=Path, required=True, help="ONNX file to write (e.g. alt_gvt_large.onnx)")
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}, as in the recipe)"
    )
    p.add_argument("--atol", type=float, default=1e-3, help="max abs logit difference allowed vs PyTorch")
    p.add_argument("--parity-batch", type=int, default=2, help="random images in the parity check (default 2)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    check_output_file(args.output, "--output")
    record = export_onnx(
        args.output,
        model_name=args.model,
        resume=args.resume,
        random_init=args.random_init,
        seed=args.seed,
        opset=args.opset,
        parity_batch=args.parity_batch,
        atol=args.atol,
    )
    print(
        f"Wrote {record['onnx']} ({record['size_bytes'] / 2**20:.1f} MiB, opset {record['opset']}, "
        f"sha256 {record['sha256'][:16]}...)"
    )
    print(parity_line(record["parity"]))
    print(f"Weights: {record['weights']}")
    return 0
