"""``twins preprocess`` (a val folder -> bins in a folder you name) and ``twins prepare-inputs`` (the same into the
content-addressed cache, what the DAG's preprocess task runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import write_json_atomic
from ..labels import LABEL_SCHEME_TEXT
from ..preprocess.bins import preprocess
from ..preprocess.inputs import prepare_inputs
from .arguments import add_dataset_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess",
        help="ImageNet val folder -> float32 .bin files (Twins_preprocess.py)",
        description="Resize(256, bicubic) -> CenterCrop(224) -> normalise each image of "
        "ROOT_PATH/<wnid>/ into BIN_PATH/<stem>.bin (raw float32 CHW), plus "
        "manifest.csv and classes.txt. Complete bins of an earlier run are kept.",
    )
    p.add_argument("--root_path", required=True, help="ImageNet val folder, one sub-folder per class")
    p.add_argument("--bin_path", required=True, help="output folder for the .bin files")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores; 1 = no pool)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only this many images, taken round-robin across classes (a quick representative run)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="record undecodable images as skipped in the manifest instead of failing",
    )
    p.set_defaults(func=_main)

    p = subparsers.add_parser(
        "prepare-inputs",
        help="preprocess into the content-addressed cache (what the DAG's preprocess task runs)",
        description="twins preprocess into <cache>/bins/<key>, reused when the dataset, transform and limit are "
        "unchanged; writes the cache record as JSON to --record",
    )
    add_dataset_arguments(p)
    p.add_argument("--cache-dir", required=True, help="cache root (TWINS_WORK_DIR/cache)")
    p.add_argument("--record", required=True, help="where to write the cache record (JSON)")
    p.set_defaults(func=_prepare_inputs_main)


def _main(args: argparse.Namespace) -> int:
    result = preprocess(args.root_path, args.bin_path, workers=args.workers, limit=args.limit, skip_bad=args.skip_bad)
    print(
        f"preprocess: {result.num_images} images -> {result.bin_path}: {result.num_written} written, "
        f"{result.num_reused} kept from an earlier run, {len(result.bad)} skipped as undecodable; "
        f"{result.seconds:.1f} s ({result.rate:.1f} img/s); labels: {LABEL_SCHEME_TEXT[result.label_scheme]}"
    )
    return 0


def _prepare_inputs_main(args: argparse.Namespace) -> int:
    record = prepare_inputs(
        args.root_path, args.cache_dir, limit=args.limit, workers=args.workers, skip_bad=args.skip_bad
    )
    write_json_atomic(Path(args.record), record)
    return 0
