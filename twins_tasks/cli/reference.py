"""``twins reference`` (PyTorch fp32 logits) and ``twins compare`` (a backend's agreement with them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ParityError
from ..files import check_output_file
from ..reference import agreement_line, compare_with_reference, failure_message, name_list, reference_logits
from .arguments import add_weights_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reference",
        help="PyTorch fp32 logits for the first N inputs (the parity reference)",
        description="Run the model in PyTorch eager fp32 on the first --limit inputs of "
        "--bin_path (ais_bench order) and save the logits as .npz.",
    )
    p.add_argument("--bin_path", required=True, help="folder of preprocessed .bin/.npy inputs")
    p.add_argument("--output", type=Path, required=True, help=".npz file to write")
    add_weights_arguments(p)
    p.add_argument("--limit", type=int, default=16, help="how many inputs (default 16; 0 = all)")
    p.add_argument("--batch_size", type=int, default=8)
    p.set_defaults(func=_reference_main)

    c = subparsers.add_parser(
        "compare",
        help="agreement of a backend's outputs with the PyTorch reference",
        description="Read a backend's outputs (TXT/NPY/BIN, ais_bench layout) for the "
        "reference's images; print top-1 agreement and logit differences.",
    )
    c.add_argument("--reference", type=Path, required=True, help=".npz written by `twins reference`")
    c.add_argument("--pred", type=Path, required=True, help="output folder of the inference step")
    c.add_argument("--json", dest="json_path", type=Path, default=None, help="write the numbers as JSON here")
    c.add_argument(
        "--min-top1-agreement",
        type=float,
        default=None,
        help="fail (exit 1) below this fraction of matching top-1 classes, e.g. 0.99",
    )
    c.add_argument(
        "--atol", type=float, default=None, help="fail (exit 1) when a logit differs by more (TXT rounding is added)"
    )
    c.set_defaults(func=_compare_main)


def _reference_main(args: argparse.Namespace) -> int:
    check_output_file(args.output, "--output")
    record = reference_logits(
        args.bin_path,
        args.output,
        model_name=args.model,
        resume=args.resume,
        random_init=args.random_init,
        seed=args.seed,
        limit=args.limit or None,
        batch_size=args.batch_size,
    )
    print(
        f"Wrote PyTorch reference logits for {record['num_images']} images "
        f"({record['first_stem']} .. {record['last_stem']}) to {record['reference']}"
    )
    print(f"Weights: {record['weights']}")
    return 0


def _compare_main(args: argparse.Namespace) -> int:
    check_output_file(args.json_path, "--json")
    record = compare_with_reference(
        args.reference,
        args.pred,
        min_top1_agreement=args.min_top1_agreement,
        atol=args.atol,
        json_path=args.json_path,
        check=False,
    )
    print(agreement_line(record))
    if record["num_missing"]:
        print(f"Missing outputs: {record['num_missing']} of {record['num_reference']}: {name_list(record['missing'])}")
    if record["num_invalid"]:
        print(f"Unreadable outputs: {record['num_invalid']}: {name_list(sorted(record['invalid']))}")
    print(f"Reference weights: {record['reference_weights']}")
    if not record["passed"]:
        raise ParityError(failure_message(record))
    return 0
