"""One typed configuration of the recipe, shared by ``twins run`` and the Airflow DAG.

``twins run`` builds a :class:`RecipeConfig` from its flags (``twins_tasks.cli.arguments.recipe_from_args``),
the DAG from its Params (:meth:`RecipeConfig.from_params`, once, in its plan task; the other tasks read the
plan's ``config``); both are checked by the same :meth:`RecipeConfig.validate` and drive the same steps
(:mod:`twins_tasks.steps`, :mod:`twins_tasks.results`), so a CLI run and a DAG run of the same setup record the
same ``config_key`` and are compared with each other by the regression check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .baseline import parse_baseline_numbers
from .checks import check_weights_choice, parse_accuracy_batch_sizes, parse_batch_sizes, parse_device_ids
from .constants import (
    BACKEND_NAMES,
    DEFAULT_BATCH_SIZES,
    DEFAULT_MODEL,
    DEFAULT_OPSET,
    OUTPUT_FORMATS,
    PRECISION_MODES,
    RECIPE_DEFAULT_PRECISION,
)
from .errors import InputError
from .types import RetentionPolicy, Thresholds


@dataclass(frozen=True)
class BackendSettings:
    """What selects and configures the backend; each backend reads the fields it knows."""

    name: str = "auto"
    # ascend: the chips this run may use ("auto" = every chip npu-smi shows); each batch size's inference is
    # split over those free (twins_tasks.sharding, capped by RecipeConfig.infer_chips), its perf leases one.
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
    opset: int = DEFAULT_OPSET
    backend: BackendSettings = field(default_factory=BackendSettings)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    perf_loops: int = 20
    perf_rounds: int = 3
    # At most this many chips one batch size's inference is split over (twins_tasks.sharding): 0 = every chip
    # of the run, 1 = one chip per batch size (as before the split). Perf always runs on one chip.
    infer_chips: int = 0
    outfmt: str = "TXT"
    reference_images: int = 16
    # Which batch sizes score the full dataset ("all", as the recipe). The others infer only the first
    # accuracy_sample_images inputs (natural order) and are checked against a full batch size's outputs on them.
    accuracy_batch_sizes: tuple[int, ...] | str = "all"
    accuracy_sample_images: int = 500
    baseline: str | dict[str, float] | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    # What the end of the run removes from the work dir (twins_tasks.retention); not part of the config key.
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every check that needs no file system or device; raises :class:`InputError` naming the setting."""
        if not self.dataset_path:
            raise InputError("no dataset folder given: pass the ImageNet val folder (<wnid>/<image>.JPEG)")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"image limit {self.limit} must be at least 1 (or empty for all images)")
        check_weights_choice(self.checkpoint, self.random_init)
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
        if isinstance(self.infer_chips, bool) or not isinstance(self.infer_chips, int) or self.infer_chips < 0:
            raise InputError(
                f"infer chips {self.infer_chips!r} must be 0 (every chip of the run) or more (at most that many chips "
                "per batch size's inference)"
            )
        if self.outfmt not in OUTPUT_FORMATS:
            raise InputError(f"output format {self.outfmt!r} must be one of {', '.join(OUTPUT_FORMATS)}")
        if self.reference_images < 0:
            raise InputError(f"reference images {self.reference_images} must be 0 (skip) or more")
        self._check_accuracy_scope()
        parse_baseline_numbers(self.baseline)  # bad numbers fail now, before hours of work

    def _check_accuracy_scope(self) -> None:
        scope = parse_accuracy_batch_sizes(self.accuracy_batch_sizes)
        if scope != "all":
            strays = [bs for bs in scope if bs not in self.batch_sizes]
            if strays:
                raise InputError(
                    f"accuracy batch size(s) {', '.join(map(str, strays))} are not among the batch sizes "
                    f"{', '.join(map(str, self.batch_sizes))}: choose from those, or all"
                )
        if self.accuracy_sample_images < 1:
            raise InputError(
                f"accuracy sample images {self.accuracy_sample_images} must be at least 1 (the images a batch size "
                "that does not score the full dataset is checked on)"
            )

    def accuracy_scope(self) -> dict[str, Any]:
        """Which batch sizes score the full dataset, which only infer a sample and are checked against one of those
        (:func:`twins_tasks.results.collect_rows`), and the limits of that check: agreement with PyTorch's."""
        scope = parse_accuracy_batch_sizes(self.accuracy_batch_sizes)
        full = sorted(self.batch_sizes if scope == "all" else scope)
        return {
            "full": full,
            "sampled": sorted(bs for bs in self.batch_sizes if bs not in full),
            "sample_images": self.accuracy_sample_images,
            "min_agreement_top1": self.thresholds.min_agreement_top1,
            "max_abs_diff": self.thresholds.max_agreement_abs_diff,
        }

    def check_paths(self) -> None:
        """The dataset folder and the checkpoint exist here (the DAG runs this on the worker, not the scheduler)."""
        if self.checkpoint and Path(self.checkpoint).is_dir():
            # a folder exists, so "does not exist" would send the user looking in the wrong place
            raise InputError(
                f"checkpoint {self.checkpoint} is a folder, not a checkpoint file: pass the .pth file itself "
                f"(--resume, or the DAG's 'Checkpoint' Param), e.g. {Path(self.checkpoint) / 'alt_gvt_large.pth'}"
            )
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
            "rounds": self.perf_rounds,
            "precision_mode": self.backend.precision_mode,
            "op_select_implmode": self.backend.op_select_implmode,
            "batch_sizes": sorted(self.batch_sizes),  # kept in the config, not in the key: one reference per size
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
        if "accuracy_batch_sizes" in values:
            values["accuracy_batch_sizes"] = parse_accuracy_batch_sizes(values["accuracy_batch_sizes"])
        values["thresholds"] = Thresholds.from_mapping(values.get("thresholds"))
        values["retention"] = RetentionPolicy.from_mapping(values.get("retention"))
        return cls(backend=BackendSettings(**backend), **values)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, cann_env: str | None = None) -> RecipeConfig:
        """From the DAG's Params (already validated against their JSON schema by Airflow)."""
        precision = params.get("precision_mode")
        checkpoint = params.get("checkpoint_path") or None
        return cls(
            dataset_path=str(params["dataset_path"]),
            limit=params.get("image_limit"),
            model_name=params.get("model_name", DEFAULTS.model_name),
            checkpoint=checkpoint,
            random_init=not checkpoint,
            seed=int(params.get("random_init_seed", DEFAULTS.seed)),
            opset=int(params.get("opset", DEFAULTS.opset)),
            backend=BackendSettings(
                name=params.get("backend", DEFAULTS.backend.name),
                device_ids=parse_device_ids(params.get("device_ids", DEFAULTS.backend.device_ids)),
                soc_version=params.get("soc_version", DEFAULTS.backend.soc_version),
                precision_mode=None if precision in (None, RECIPE_DEFAULT_PRECISION) else precision,
                cann_env=cann_env,
            ),
            batch_sizes=parse_batch_sizes(params.get("batch_sizes", DEFAULTS.batch_sizes)),
            perf_loops=int(params.get("perf_loops", DEFAULTS.perf_loops)),
            perf_rounds=int(params.get("perf_rounds", DEFAULTS.perf_rounds)),
            infer_chips=int(params.get("infer_chips", DEFAULTS.infer_chips)),
            outfmt=str(params.get("outfmt", DEFAULTS.outfmt)).upper(),
            reference_images=int(params.get("reference_images", DEFAULTS.reference_images)),
            accuracy_batch_sizes=parse_accuracy_batch_sizes(
                params.get("accuracy_batch_sizes", DEFAULTS.accuracy_batch_sizes)
            ),
            accuracy_sample_images=int(params.get("accuracy_sample_images", DEFAULTS.accuracy_sample_images)),
            baseline=params.get("baseline") or None,
            thresholds=Thresholds.from_mapping(params),
            retention=RetentionPolicy.from_mapping(params),
        )


def _field_defaults(cls: type) -> SimpleNamespace:
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return SimpleNamespace(**values)


# Every setting's default (``DEFAULTS.perf_loops``, ``DEFAULTS.backend.name``, ``DEFAULTS.thresholds.…``): the DAG's
# Params show these, so a run triggered with the form's defaults is configured like ``twins run``'s.
DEFAULTS = _field_defaults(RecipeConfig)
