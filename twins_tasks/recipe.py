"""One typed configuration of the recipe, shared by ``twins run`` and the Airflow DAG.

``twins run`` builds a :class:`RecipeConfig` from its flags (:meth:`RecipeConfig.from_args`), the DAG from its
Params (:meth:`RecipeConfig.from_params`); both are checked by the same :meth:`RecipeConfig.validate` and drive
the same steps in :mod:`twins_tasks.pipeline`, so a CLI run and a DAG run of the same setup record the same
``config_key`` and are compared with each other by the regression check.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import DEFAULT_MODEL
from .errors import InputError
from .layout import OUTPUT_FORMATS
from .regression import Thresholds

DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
MAX_BATCH_SIZE = 256
# atc --precision_mode values (shared/toolchain-contract.md); None = the recipe's command, which passes none.
PRECISION_MODES = ("force_fp16", "allow_mix_precision", "allow_fp32_to_fp16", "must_keep_origin_dtype", "force_fp32")
# The DAG form's spelling of "pass no --precision_mode".
RECIPE_DEFAULT_PRECISION = "recipe default"
BACKEND_NAMES = ("auto", "ascend", "onnxruntime")


def parse_batch_sizes(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """'1,4,8' or [1, 4, 8] -> (1, 4, 8); integers 1..256, unique."""
    items = value.split(",") if isinstance(value, str) else list(value)
    sizes: list[int] = []
    for item in items:
        try:
            bs = int(str(item).strip())
        except ValueError:
            raise InputError(f"batch size {item!r} is not an integer (expected e.g. 1,4,8)") from None
        if not 1 <= bs <= MAX_BATCH_SIZE:
            raise InputError(f"batch size {bs} is out of range: use integers from 1 to {MAX_BATCH_SIZE}")
        if bs in sizes:
            raise InputError(f"batch size {bs} is listed twice: batch sizes must be unique")
        sizes.append(bs)
    if not sizes:
        raise InputError("no batch sizes given (expected e.g. 1,4,8)")
    return tuple(sizes)


def parse_device_ids(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...] | str:
    """``auto``, ``0,1,2`` or [0, 1, 2] -> "auto" or (0, 1, 2); non-negative, unique."""
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    items = value.split(",") if isinstance(value, str) else list(value)
    ids: list[int] = []
    for item in items:
        try:
            chip = int(str(item).strip())
        except ValueError:
            raise InputError(f"device id {item!r} is not an integer (expected e.g. 0,1 or auto)") from None
        if chip < 0 or chip in ids:
            raise InputError(f"device ids {value!r}: {chip} is negative or listed twice")
        ids.append(chip)
    if not ids:
        raise InputError("no device ids given (expected e.g. 0,1 or auto)")
    return tuple(ids)


@dataclass(frozen=True)
class BackendSettings:
    """What selects and configures the backend; each backend reads the fields it knows."""

    name: str = "auto"
    # ascend: the chips this run may use ("auto" = every chip npu-smi shows); each batch size's device work
    # leases one of them (twins_tasks.devices), so N chips run N batch sizes at once.
    device_ids: tuple[int, ...] | str = (0,)
    soc_version: str = "auto"
    precision_mode: str | None = None
    op_select_implmode: str | None = None
    cann_env: str | None = None
    ais_bench_python: str | None = None
    # onnxruntime
    providers: tuple[str, ...] | None = None
    threads: int | None = None

    def options(self, backend: str) -> dict[str, Any]:
        """Constructor keyword arguments of the resolved ``backend`` (JSON-able: they travel as an XCom)."""
        if backend == "onnxruntime":
            return {"providers": list(self.providers) if self.providers else None, "threads": self.threads}
        first = self.device_ids[0] if isinstance(self.device_ids, tuple) else 0
        options: dict[str, Any] = {"device": first, "soc_version": self.soc_version}
        for key in ("precision_mode", "op_select_implmode", "cann_env", "ais_bench_python"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options


@dataclass(frozen=True)
class RecipeConfig:
    """Everything that defines one validation run of the recipe.

    ``checkpoint`` None with ``random_init`` True means seeded random weights (a toolchain check).
    """

    dataset_path: str
    limit: int | None = None
    skip_bad: bool = False
    workers: int | None = None
    model_name: str = DEFAULT_MODEL
    checkpoint: str | None = None
    random_init: bool = False
    seed: int = 0
    opset: int = 11
    backend: BackendSettings = field(default_factory=BackendSettings)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    perf_loops: int = 20
    perf_rounds: int = 3
    outfmt: str = "TXT"
    reference_images: int = 16
    baseline: str | dict[str, float] | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every check that needs no file system or device; raises :class:`InputError` naming the setting."""
        if not self.dataset_path:
            raise InputError("no dataset folder given: pass the ImageNet val folder (<wnid>/<image>.JPEG)")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"image limit {self.limit} must be at least 1 (or empty for all images)")
        if self.checkpoint and self.random_init:
            raise InputError("give either a checkpoint (--resume) or --random-init, not both")
        if not self.checkpoint and not self.random_init:
            raise InputError(
                "no checkpoint: pass --resume alt_gvt_large.pth, or --random-init --seed S to "
                "validate the toolchain with seeded random weights"
            )
        if not 11 <= self.opset <= 21:
            raise InputError(f"ONNX opset {self.opset} is out of range: use 11 (the recipe's) to 21")
        if self.backend.name not in BACKEND_NAMES:
            raise InputError(f"unknown backend {self.backend.name!r}: choose {', '.join(BACKEND_NAMES)}")
        if self.backend.precision_mode is not None and self.backend.precision_mode not in PRECISION_MODES:
            raise InputError(
                f"atc precision mode {self.backend.precision_mode!r} is not one of {', '.join(PRECISION_MODES)}"
            )
        parse_batch_sizes(self.batch_sizes)
        if self.perf_loops < 1:
            raise InputError(f"perf loop count {self.perf_loops} must be at least 1")
        if not 1 <= self.perf_rounds <= 20:
            raise InputError(f"perf rounds {self.perf_rounds} must be from 1 to 20")
        if self.outfmt not in OUTPUT_FORMATS:
            raise InputError(f"output format {self.outfmt!r} must be one of {', '.join(OUTPUT_FORMATS)}")
        if self.reference_images < 0:
            raise InputError(f"reference images {self.reference_images} must be 0 (skip) or more")
        from .report import parse_baseline_numbers

        parse_baseline_numbers(self.baseline)  # bad numbers fail now, before hours of work

    def check_paths(self) -> None:
        """The dataset folder and the checkpoint exist here (the DAG runs this on the worker, not the scheduler)."""
        if self.checkpoint and not Path(self.checkpoint).is_file():
            raise InputError(
                f"checkpoint {self.checkpoint} does not exist on this host: fix the checkpoint path "
                f"(--resume, or the DAG's 'Checkpoint' Param), or leave it empty for seeded random weights"
            )
        if not Path(self.dataset_path).is_dir():
            raise InputError(
                f"dataset folder {self.dataset_path} does not exist on this host: fix the dataset path "
                f"(--root_path, or the DAG's 'Dataset folder' Param; ImageNet val layout: <wnid>/<image>.JPEG)"
            )

    @property
    def key_options(self) -> dict[str, Any]:
        """The settings besides model, weights, dataset and backend that make two runs comparable."""
        return {
            "limit": self.limit,
            "loop": self.perf_loops,
            "precision_mode": self.backend.precision_mode,
            "batch_sizes": sorted(self.batch_sizes),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (an XCom, a log line); :meth:`from_dict` reverses it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeConfig:
        values = dict(data)
        backend = dict(values.pop("backend", {}) or {})
        if backend.get("providers") is not None:
            backend["providers"] = tuple(backend["providers"])
        if "device_ids" in backend:
            backend["device_ids"] = parse_device_ids(backend["device_ids"])
        values["batch_sizes"] = tuple(values.get("batch_sizes", DEFAULT_BATCH_SIZES))
        values["thresholds"] = Thresholds.from_mapping(values.get("thresholds"))
        return cls(backend=BackendSettings(**backend), **values)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, cann_env: str | None = None) -> RecipeConfig:
        """From the DAG's Params (already validated against their JSON schema by Airflow)."""
        precision = params.get("precision_mode")
        checkpoint = params.get("checkpoint_path") or None
        return cls(
            dataset_path=str(params["dataset_path"]),
            limit=params.get("image_limit"),
            model_name=params.get("model_name", DEFAULT_MODEL),
            checkpoint=checkpoint,
            random_init=not checkpoint,
            seed=int(params.get("random_init_seed", 0)),
            opset=int(params.get("opset", 11)),
            backend=BackendSettings(
                name=params.get("backend", "auto"),
                device_ids=parse_device_ids(params.get("device_ids", [0])),
                soc_version=params.get("soc_version", "auto"),
                precision_mode=None if precision in (None, RECIPE_DEFAULT_PRECISION) else precision,
                cann_env=cann_env,
            ),
            batch_sizes=parse_batch_sizes(params.get("batch_sizes", DEFAULT_BATCH_SIZES)),
            perf_loops=int(params.get("perf_loops", 20)),
            perf_rounds=int(params.get("perf_rounds", 3)),
            outfmt=str(params.get("outfmt", "TXT")).upper(),
            reference_images=int(params.get("reference_images", 16)),
            baseline=params.get("baseline") or None,
            thresholds=Thresholds.from_mapping(params),
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RecipeConfig:
        """From ``twins run``'s flags (see :func:`add_recipe_arguments`)."""
        return cls(
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
            outfmt=args.outfmt,
            reference_images=args.reference_images,
            baseline=args.baseline,
            thresholds=Thresholds(
                max_top1_drop=args.max_top1_drop, max_throughput_drop_pct=args.max_throughput_drop_pct
            ),
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


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """``twins run``'s flags: the recipe's scripts' spelling where they mirror one, ``--kebab-case`` for ours."""
    from .backends import add_backend_arguments

    d = RecipeConfig.__dataclass_fields__
    parser.add_argument("--root_path", required=True, help="ImageNet-layout val folder (<wnid>/<image>.JPEG)")
    parser.add_argument("--resume", default=None, help="checkpoint (alt_gvt_large.pth)")
    parser.add_argument("--random-init", action="store_true", help="seeded random weights instead of a checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="timm model name")
    parser.add_argument("--opset", type=int, default=d["opset"].default, help="ONNX opset (the recipe's: 11)")
    parser.add_argument(
        "--batch-sizes",
        "--batch_sizes",
        dest="batch_sizes",
        default=",".join(map(str, DEFAULT_BATCH_SIZES)),
        help="comma-separated batch sizes, 1-256",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only N images (round-robin over classes)")
    parser.add_argument("--workers", type=int, default=None, help="preprocess processes (default: all cores)")
    parser.add_argument("--skip-bad", action="store_true", help="skip undecodable images (recorded in the manifest)")
    parser.add_argument("--loop", type=int, default=d["perf_loops"].default, help="perf loop count (ais_bench --loop)")
    parser.add_argument(
        "--perf-rounds",
        type=int,
        default=d["perf_rounds"].default,
        help="perf rounds of --loop runs each; the median round counts and their spread is the noise",
    )
    parser.add_argument("--outfmt", default="TXT", choices=list(OUTPUT_FORMATS), help="ais_bench --outfmt")
    parser.add_argument(
        "--reference-images", type=int, default=d["reference_images"].default,
        help="images compared with PyTorch logits (0 = skip)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", default=None,
        help="none, a previous run id, a preset (recipe-gpu, recipe-310p) or numbers like 1:62,4:77",
    )  # fmt: skip
    parser.add_argument(
        "--max-top1-drop", type=float, default=Thresholds.max_top1_drop,
        help="regression check: fail when top-1 drops more than this many points",
    )  # fmt: skip
    parser.add_argument(
        "--max-throughput-drop-pct", type=float, default=Thresholds.max_throughput_drop_pct,
        help="regression check: fail when throughput drops more than this many percent",
    )  # fmt: skip
    add_backend_arguments(parser)
