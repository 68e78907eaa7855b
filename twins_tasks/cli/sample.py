"""``twins make-sample``: a small generated dataset in ImageNet val layout."""

from __future__ import annotations

import argparse

from ..files import check_output_dir
from ..sample import GENERATED_NOTE, make_sample


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "make-sample",
        help="write a small generated dataset in ImageNet val layout",
        description="Write DIR/<wnid>/ILSVRC2012_val_*.JPEG with generated pictures "
        "(not ImageNet) to try the pipeline: varied sizes, a grayscale, "
        "a CMYK and a PNG-named-.JPEG file. Same seed, same bytes.",
    )
    p.add_argument("--out", required=True, help="folder to write (created if missing)")
    p.add_argument("--classes", type=int, default=10, help="number of class folders (default 10)")
    p.add_argument("--per-class", type=int, default=5, help="pictures per class (default 5)")
    p.add_argument("--seed", type=int, default=0, help="same seed => byte-identical files (default 0)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    paths = make_sample(args.out, args.classes, args.per_class, args.seed)
    print(f"Wrote {len(paths)} pictures in {args.classes} classes to {args.out} ({GENERATED_NOTE})")
    return 0
