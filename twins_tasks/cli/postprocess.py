"""``twins postprocess``: the recipe's Twins_postprocess.py (top-1/top-5 of inference outputs)."""

from __future__ import annotations

import argparse
import sys

from ..files import check_output_file, write_json_atomic
from ..postprocess import score


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "postprocess",
        help="top-1/top-5 accuracy of inference outputs (Twins_postprocess.py)",
        description="Score the outputs of `twins infer` (or ais_bench) against ImageNet "
        "labels. Missing or unreadable outputs count as wrong and are named.",
    )
    p.add_argument("--pred", required=True, help="result folder: <output>/<output_dirname>")
    p.add_argument(
        "--input_path",
        required=True,
        help="ImageNet val folder (<wnid>/<image>), a manifest.csv, or the bin folder holding one",
    )
    p.add_argument("--json", dest="json_path", help="write the accuracy record as JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 when any output is missing or unreadable")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    check_output_file(args.json_path, "--json")
    result = score(args.pred, args.input_path)
    for line in result.report_lines():
        print(line, flush=True)
    if args.json_path:
        write_json_atomic(args.json_path, result.to_dict())
    if args.strict and not result.complete:
        print(
            f"twins postprocess: --strict: {len(result.missing)} missing and {len(result.unreadable)} "
            f"unreadable outputs",
            file=sys.stderr,
        )
        return 1
    return 0
