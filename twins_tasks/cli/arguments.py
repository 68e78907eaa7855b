"""The flags several subcommands share, and turning them into the library's settings (argparse stays here)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends import BACKENDS, Backend, get_backend, resolve_backend_name
from ..checks import batch_size_problem, parse_accuracy_batch_sizes, parse_batch_sizes, parse_device_ids
from ..constants import DEFAULT_CANN_ENV, DEFAULT_MODEL, OUTPUT_FORMATS
from ..recipe import DEFAULTS, BackendSettings, RecipeConfig
from ..types import RetentionPolicy, Thresholds


def batch_size_arg(text: str) -> int:
    """argparse ``type`` for ``--batchsize``: an integer from 1 to 256 (exit 2 with the reason otherwise)."""
    problem = batch_size_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return int(text)


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model --resume --random-init --seed``: shared by pth2onnx and reference."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL} == Twins alt_gvt_large)"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="checkpoint .pth (state dict, {'model': ...} or {'state_dict': ...}; 'module.' prefixes are stripped)",
    )
    parser.add_argument(
        "--random-init", action="store_true", help="no checkpoint: use random weights on purpose (the outputs say so)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by compile/infer/perf/run; each backend reads the ones it knows.

    Flags that mirror a tool keep its spelling (``--device`` of ais_bench, ``--soc_version`` and
    ``--precision_mode`` of atc); our own use ``--kebab-case`` (old spellings stay as aliases).
    """
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *BACKENDS],
        help="auto = ascend when atc/CANN is installed, else onnxruntime",
    )
    g = parser.add_argument_group("onnxruntime backend")
    g.add_argument(
        "--providers", default=None, help="comma-separated ONNX Runtime execution providers (default: best available)"
    )
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    a = parser.add_argument_group("ascend backend")
    a.add_argument("--device", "-d", type=int, default=0, help="NPU device id (ais_bench --device)")
    a.add_argument(
        "--device-ids",
        default=None,
        help="twins run: chips the batch sizes may use, e.g. 0,1 or auto (every chip npu-smi shows); "
        "each batch size leases one (default: --device)",
    )
    a.add_argument(
        "--cann-env", "--cann_env", dest="cann_env", default=None, help=f"CANN set_env.sh (default {DEFAULT_CANN_ENV})"
    )
    a.add_argument("--soc_version", default="auto", help="atc --soc_version, e.g. Ascend310P3; auto = from npu-smi")
    a.add_argument("--precision_mode", default=None, help="atc --precision_mode (default: none, as the recipe)")
    a.add_argument("--op_select_implmode", default=None, help="atc --op_select_implmode")
    a.add_argument(
        "--python", dest="ais_bench_python", default=None, help="Python interpreter that has ais_bench installed"
    )


def backend_settings_from_args(args: argparse.Namespace) -> BackendSettings:
    """The backend flags of ``twins compile/infer/perf/run`` (added by ``add_backend_arguments``)."""
    return BackendSettings(
        name=args.backend,
        device_ids=parse_device_ids(args.device_ids if args.device_ids is not None else [args.device]),
        soc_version=args.soc_version,
        precision_mode=args.precision_mode,
        op_select_implmode=args.op_select_implmode,
        cann_env=args.cann_env,
        ais_bench_python=args.ais_bench_python,
        providers=tuple(args.providers.split(",")) if args.providers else None,
        threads=args.threads,
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend that ``twins compile/infer/perf`` flags select (the same settings ``twins run`` uses)."""
    settings = backend_settings_from_args(args)
    name = resolve_backend_name(settings.name, cann_env=settings.cann_env)
    return get_backend(name, **settings.options(name))


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset flags of ``twins run`` and ``twins prepare-inputs`` (what the DAG's preprocess task runs)."""
    parser.add_argument("--root_path", required=True, help="ImageNet-layout val folder (<wnid>/<image>.JPEG)")
    parser.add_argument("--limit", type=int, default=None, help="use only N images (round-robin over classes)")
    parser.add_argument("--workers", type=int, default=None, help="preprocess processes (default: all cores)")
    parser.add_argument("--skip-bad", action="store_true", help="skip undecodable images (recorded in the manifest)")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``twins run``'s flags: the recipe's scripts' spelling where they mirror one, ``--kebab-case`` for ours."""
    add_dataset_arguments(parser)
    parser.add_argument("--resume", default=None, help="checkpoint (alt_gvt_large.pth)")
    parser.add_argument("--random-init", action="store_true", help="seeded random weights instead of a checkpoint")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the random weights")
    parser.add_argument("--model", default=DEFAULTS.model_name, help="timm model name")
    parser.add_argument("--opset", type=int, default=DEFAULTS.opset, help="ONNX opset (the recipe's: 11)")
    parser.add_argument(
        "--batch-sizes",
        "--batch_sizes",
        dest="batch_sizes",
        default=",".join(map(str, DEFAULTS.batch_sizes)),
        help="comma-separated batch sizes, 1-256",
    )
    parser.add_argument("--loop", type=int, default=DEFAULTS.perf_loops, help="perf loop count (ais_bench --loop)")
    parser.add_argument(
        "--perf-rounds",
        type=int,
        default=DEFAULTS.perf_rounds,
        help="perf rounds of --loop runs each; the median round counts and their spread is the noise",
    )
    parser.add_argument(
        "--infer-chips", type=int, default=DEFAULTS.infer_chips,
        help="at most this many chips one batch size's inference is split over (Ascend; default 0 = every chip "
        "of --device-ids free when it starts, and more as they free up; 1 = one chip per batch size)",
    )  # fmt: skip
    parser.add_argument("--outfmt", default="TXT", choices=list(OUTPUT_FORMATS), help="ais_bench --outfmt")
    parser.add_argument(
        "--reference-images", type=int, default=DEFAULTS.reference_images,
        help="images compared with PyTorch logits (0 = skip)",
    )  # fmt: skip
    parser.add_argument(
        "--accuracy-batch-sizes", default=DEFAULTS.accuracy_batch_sizes,
        help="batch sizes that score top-1/top-5 on the full dataset, e.g. 1 (default all, as the recipe); the "
        "others infer only --accuracy-sample-images and fail when they disagree with the first full one's outputs",
    )  # fmt: skip
    parser.add_argument(
        "--accuracy-sample-images", type=int, default=DEFAULTS.accuracy_sample_images,
        help="the first N images (natural order) the other batch sizes infer and are checked on "
        f"(default {DEFAULTS.accuracy_sample_images}; at most the dataset)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", default=None,
        help="none, a previous run id, a preset (recipe-gpu, recipe-310p) or numbers like 1:62,4:77",
    )  # fmt: skip
    parser.add_argument(
        "--max-top1-drop", type=float, default=DEFAULTS.thresholds.max_top1_drop,
        help="regression check: fail when top-1 drops more than this many points",
    )  # fmt: skip
    parser.add_argument(
        "--max-throughput-drop-pct", type=float, default=DEFAULTS.thresholds.max_throughput_drop_pct,
        help="regression check: fail when throughput drops more than this many percent below its reference "
        "(and beyond the measured noise)",
    )  # fmt: skip
    parser.add_argument(
        "--min-agreement-top1", type=float, default=DEFAULTS.thresholds.min_agreement_top1,
        help="regression check: fail a batch size whose top-1 class matches PyTorch's on fewer of the reference "
        "images than this percent",
    )  # fmt: skip
    parser.add_argument(
        "--max-agreement-abs-diff", type=float, default=DEFAULTS.thresholds.max_agreement_abs_diff,
        help="regression check: fail a batch size whose logits differ from PyTorch's by more than this",
    )  # fmt: skip
    parser.add_argument(
        "--confirm-after-hours", type=float, default=DEFAULTS.thresholds.confirm_after_hours,
        help="regression check: a throughput drop fails only when an earlier run at least this many hours before "
        "saw it too (until then the run is 'suspect'); 0 = the run's re-measurement decides",
    )  # fmt: skip
    add_backend_arguments(parser)
    add_retention_arguments(parser.add_argument_group("retention, applied at the end of the run (as twins clean)"))


def _budget_arg(text: str) -> float | None:
    """argparse ``type`` for ``--cache-budget-gib``: a number, or ``none`` for no budget."""
    return None if text.strip().lower() in ("none", "") else float(text)


def add_retention_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The retention policy's flags (``twins run``, ``twins clean``): the DAG's Params of the same names."""
    d = DEFAULTS.retention
    parser.add_argument(
        "--keep-runs", type=int, default=d.keep_runs,
        help=f"keep the per-image outputs of the newest N recorded runs (default {d.keep_runs})",
    )  # fmt: skip
    parser.add_argument(
        "--keep-failed-days", type=float, default=d.keep_failed_days,
        help=f"and of failed, partial or regressed runs for this many days (default {d.keep_failed_days:g})",
    )  # fmt: skip
    parser.add_argument(
        "--grace-hours", type=float, default=d.grace_hours,
        help="a run folder or cache entry touched within this many hours may belong to a run still going and is "
        f"left alone; unrecorded runs untouched longer died before record and are removed (default {d.grace_hours:g})",
    )  # fmt: skip
    parser.add_argument(
        "--cache-budget-gib", type=_budget_arg, default=d.cache_budget_gib,
        help="size budget of the caches (bins, ONNX, compiled, reference): least recently used entries go first; "
        f"none = no budget (default {d.cache_budget_gib:g})",
    )  # fmt: skip


def retention_from_args(args: argparse.Namespace) -> RetentionPolicy:
    """From the flags :func:`add_retention_arguments` adds."""
    return RetentionPolicy(
        keep_runs=args.keep_runs,
        keep_failed_days=args.keep_failed_days,
        grace_hours=args.grace_hours,
        cache_budget_gib=args.cache_budget_gib,
    )


def recipe_from_args(args: argparse.Namespace) -> RecipeConfig:
    """From ``twins run``'s flags (see :func:`add_recipe_arguments`)."""
    return RecipeConfig(
        dataset_path=args.root_path,
        limit=args.limit,
        skip_bad=args.skip_bad,
        workers=args.workers,
        model_name=args.model,
        checkpoint=args.resume,
        random_init=args.random_init,
        seed=args.seed,
        opset=args.opset,
        backend=backend_settings_from_args(args),
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        perf_loops=args.loop,
        perf_rounds=args.perf_rounds,
        infer_chips=args.infer_chips,
        outfmt=args.outfmt,
        reference_images=args.reference_images,
        accuracy_batch_sizes=parse_accuracy_batch_sizes(args.accuracy_batch_sizes),
        accuracy_sample_images=args.accuracy_sample_images,
        baseline=args.baseline,
        thresholds=Thresholds(
            max_top1_drop=args.max_top1_drop,
            max_throughput_drop_pct=args.max_throughput_drop_pct,
            min_agreement_top1=args.min_agreement_top1,
            max_agreement_abs_diff=args.max_agreement_abs_diff,
            confirm_after_hours=args.confirm_after_hours,
        ),
        retention=retention_from_args(args),
    )
