"""``twins perf``: the pure-performance loop on a compiled artifact (ais_bench --loop)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..files import check_output_file, write_json_atomic
from .arguments import add_backend_arguments, backend_from_args, batch_size_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "perf",
        help="pure-performance loop on a compiled artifact (ais_bench --loop)",
        description="Run the compiled model LOOP times on random input and print ais_bench's Performance Summary.",
    )
    add_backend_arguments(p)
    p.add_argument("--model", "-m", required=True, help="compiled artifact (from `twins compile`)")
    p.add_argument("--batchsize", type=batch_size_arg, required=True, help="batch size (1-256)")
    p.add_argument("--loop", "-l", type=int, default=20)
    p.add_argument("--warmup_count", type=int, default=1)
    p.add_argument("--json", dest="json_path", help="write the numbers as JSON here")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    check_output_file(args.json_path, "--json")
    backend = backend_from_args(args)
    result = backend.perf(Path(args.model), args.batchsize, loop=args.loop, warmup=args.warmup_count)
    for line in result.summary_lines():
        print(line, flush=True)
    if args.json_path:
        write_json_atomic(args.json_path, result.to_dict())
    else:
        print(json.dumps(result.to_dict()))
    return 0
