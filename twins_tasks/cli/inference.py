"""``twins compile`` (atc: ONNX -> a fixed-batch artifact) and ``twins infer`` (ais_bench: one output per input)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from ..constants import OUTPUT_FORMATS
from ..files import check_output_dir, check_output_file, write_json_atomic
from ..inference import infer_checked
from .arguments import add_backend_arguments, backend_from_args, batch_size_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser(
        "compile",
        help="compile an ONNX model for one batch size (atc)",
        description="Fix the batch size of an ONNX model and build the backend's artifact "
        "(atc's .om on Ascend, an optimized .onnx for ONNX Runtime).",
    )
    add_backend_arguments(c)
    c.add_argument("--model", required=True, help="ONNX model with a dynamic batch axis (from `twins pth2onnx`)")
    c.add_argument(
        "--batchsize", type=batch_size_arg, required=True, help="batch size the artifact is built for (1-256)"
    )
    c.add_argument("--output", required=True, help="folder for the artifact")
    c.add_argument("--name", default=None, help="artifact base name (default <model stem>_bs<N>, as atc --output)")
    c.add_argument("--json", dest="json_path", help="write the compile record as JSON here")
    c.set_defaults(func=_compile_main)

    i = subparsers.add_parser(
        "infer",
        help="run every preprocessed input through an artifact (ais_bench)",
        description="Run the inputs in batches and write one output per input as "
        "<output>/<output_dirname>/<stem>_0.<fmt>, as ais_bench does.",
    )
    add_backend_arguments(i)
    i.add_argument("--model", "-m", required=True, help="compiled artifact (from `twins compile`)")
    i.add_argument(
        "--input",
        "-i",
        required=True,
        help="one folder of .bin/.npy inputs, or comma-separated files (ais_bench reads a "
        "comma-separated list of folders as one folder per model input; this model has one)",
    )
    i.add_argument("--batchsize", type=batch_size_arg, required=True, help="the artifact's batch size (1-256)")
    i.add_argument("--output", "-o", default=None, help="result root folder")
    i.add_argument(
        "--output_dirname",
        default=None,
        help="sub-folder of --output for the outputs (default: a timestamp, as ais_bench)",
    )
    i.add_argument(
        "--outfmt", default="BIN", type=str.upper, choices=OUTPUT_FORMATS, help="output file format (default BIN)"
    )
    i.add_argument("--json", dest="json_path", help="write the run record (summary included) as JSON here")
    i.set_defaults(func=_infer_main, _parser=i)


def _compile_main(args: argparse.Namespace) -> int:
    check_output_dir(args.output, "--output")
    check_output_file(args.json_path, "--json")
    backend = backend_from_args(args)
    result = backend.compile(Path(args.model), args.batchsize, Path(args.output), name=args.name)
    print(
        f"{result.artifact}  (batch size {result.batch_size}, compiled by {result.backend} in "
        f"{result.compile_seconds:.1f} s)",
        flush=True,
    )
    _emit(result.to_dict(), args.json_path)
    return 0


def _infer_main(args: argparse.Namespace) -> int:
    if args.output is None:
        # ais_bench's own words for the same mistake; argument errors exit 2 there too.
        if args.output_dirname is not None:
            args._parser.error("--output_dirname requires --output (output_dirname is a sub-folder of output)")
        args._parser.error("--output is required: outputs go to <output>/<output_dirname>/")
    dirname = args.output_dirname or datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    check_output_dir(Path(args.output) / dirname, "--output/--output_dirname")
    check_output_file(args.json_path, "--json")
    backend = backend_from_args(args)
    result = infer_checked(
        backend, Path(args.model), args.input, args.batchsize, Path(args.output), dirname, outfmt=args.outfmt
    )
    compute = result.summary.get("NPU_compute_time", {})
    print(
        f"{result.num_inputs} inputs -> {result.num_outputs} outputs in {result.output_dir} ({args.outfmt}), "
        f"batch size {result.batch_size}, {result.seconds:.1f} s, {result.throughput:.2f} img/s end to end, "
        f"compute {compute.get('mean', 0.0):.2f} ms/batch ({result.summary.get('throughput', 0.0):.2f} img/s)",
        flush=True,
    )
    if args.json_path:
        write_json_atomic(args.json_path, result.to_dict())
    return 0


def _emit(record: dict, json_path: str | None) -> None:
    """A JSON record for scripts: to ``--json PATH`` or as one last stdout line."""
    if json_path:
        write_json_atomic(json_path, record)
    else:
        print(json.dumps(record), flush=True)
