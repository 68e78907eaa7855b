"""The export step (recipe ``Twins_pth2onnx.py``): checkpoint -> ONNX, checked against PyTorch.

``twins pth2onnx --resume alt_gvt_large.pth --output alt_gvt_large.onnx`` builds timm ``twins_svt_large``
(== Twins ``alt_gvt_large``: same keys, no renames), loads the checkpoint strictly, exports with the
TorchScript exporter (input ``input`` (N,3,224,224), output ``output`` (N,1000), dynamic batch), runs
``onnx.checker`` and then compares ONNX Runtime with PyTorch on fresh random images. Without a checkpoint the
weights are random only when asked for explicitly (``--random-init --seed S``), and every output says so.

torch/timm/onnx/onnxruntime are imported inside functions: ``twins --help`` must stay cheap.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import discard_incomplete, load_record, mark_used, relative_paths, require_record, sweep_stale_temps
from .checks import check_weights_choice
from .constants import DEFAULT_MODEL, DEFAULT_OPSET, IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from .errors import CheckpointError, InputError, ParityError, ToolError
from .files import (
    atomic_dir,
    atomic_path,
    cached_sha256,
    is_no_space,
    no_space_is_input_error,
    sha256_json,
    write_json_atomic,
)
from .versions import software_versions

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

EXAMPLE_BATCH = 2  # >1 so that a batch size the tracer folded into a constant shows up in the batch-1 check
_LIST = 10  # how many key names an error message lists per kind
EXPORT_RECORD = "export.json"  # the ONNX cache entry's completion record (see prepare_model)
_EXPORT_STACK = ("torch", "timm", "onnx", "onnxruntime")  # the versions an export record names
_EXPORT_PATHS = ("onnx", "parity_json")  # stored in it relative to the cache entry


# --------------------------------------------------------------------------------------------- model


def build_model(model_name: str = DEFAULT_MODEL) -> torch.nn.Module:
    """timm ``model_name`` with 1000 classes, no pretrained download, eval mode, fused attention off.

    Fused attention (``F.scaled_dot_product_attention``) is switched off on every attention module: the
    TorchScript exporter cannot emit it at old opsets, and the PyTorch reference should run the same math as
    the exported graph. Per module rather than ``timm.layers.set_fused_attn`` so no global state changes.
    """
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models("twins*")
        raise InputError(
            f"unknown timm model {model_name!r}: the recipe's model is {DEFAULT_MODEL!r} "
            f"(Twins alt_gvt_large); Twins variants in this timm: {', '.join(close)}"
        )
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            setattr(module, "fused_attn", False)  # noqa: B010  (nn.Module typing forbids plain assignment)
    return model.eval()


def _state_dict_of(obj: Any, path: Path) -> tuple[dict[str, Any], str]:
    """The state dict inside a loaded checkpoint and where it was (plain, ``model``, ``state_dict``)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a state dict: "
            "pass a file saved with torch.save(model.state_dict(), ...)"
        )
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            return dict(inner), key
    return dict(obj), "plain"


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST])
    more = f" ... and {len(keys) - _LIST} more" if len(keys) > _LIST else ""
    return f"{len(keys)} {title}: {shown}{more}"


# How torch names the callable a weights-only load refused, across versions:
# "Unsupported global: GLOBAL os.system was not an allowed global by default" (2.4-2.5) and
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked." (2.6+).
_BLOCKED_GLOBAL = re.compile(
    r"[Uu]nsupported (?:global: )?GLOBAL (?P<name>\S+?)(?=[\s,.]*(?:was|whose|$))(?P<rest>[^\n.]*)"
)


def _short_error(exc: BaseException) -> str:
    """torch.load's errors run to paragraphs with terminal colours: keep what says what is wrong, whole.

    A weights-only refusal becomes "would run code on load" with the blocked callable (e.g. ``posix.system``);
    torch's own first line is cut off and advises re-running with ``weights_only=False``, which is how such a
    file runs its code.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        detail = blocked.group(0).strip().rstrip(".")
        return (
            f"it would run code on load: it asks for the Python callable {blocked['name']} ({detail}), which a "
            "checkpoint of weights never needs; it was refused without running anything. Load it only if you "
            "trust its source"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``model`` strictly; return what was loaded (path, sha256, format).

    Accepts a plain state dict, ``{"model": sd}`` (Twins/DeiT training checkpoints, whose ``args`` Namespace
    is allowed), ``{"state_dict": sd}``, and ``module.`` prefixes (DataParallel). Any missing, unexpected or
    mis-shaped key is an error: a partly loaded model would export and run, and quietly score near zero.
    """
    import argparse as _argparse

    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist: pass --resume the .pth file of the weights "
            "(e.g. alt_gvt_large.pth), or --random-init --seed S for an untrained model"
        )
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is not a file but a folder: pass --resume the .pth file itself, "
            f"e.g. {path / 'alt_gvt_large.pth'}"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file: pass --resume the .pth file itself")
    try:
        # weights_only: a checkpoint must not run code. argparse.Namespace is a plain attribute bag that
        # DeiT-style training scripts (Twins' included) store beside the weights.
        with torch.serialization.safe_globals([_argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file (UnpicklingError, KeyError, RuntimeError)
        raise CheckpointError(
            f"checkpoint {path} is not a loadable PyTorch checkpoint ({_short_error(exc)}): "
            "pass the .pth written by torch.save; a checkpoint holding other Python objects "
            "must be re-saved as its state dict only"
        ) from exc

    state, where = _state_dict_of(obj, path)
    prefixed = sum(1 for k in state if isinstance(k, str) and k.startswith("module."))
    if prefixed:
        state = {(k.removeprefix("module.") if isinstance(k, str) else k): v for k, v in state.items()}
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"checkpoint {path} ({where}) is not a state dict: "
            f"{_listing('entries are not tensors', not_tensors)}; pass a file saved with "
            "torch.save(model.state_dict(), ...) or {'model': state_dict}"
        )

    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        model_name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
        problems = [
            _listing(title, keys)
            for title, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise CheckpointError(
            f"checkpoint {path} does not fit model {model_name!r} "
            f"({len(state)} tensors in the checkpoint, {len(expected)} in the model): "
            + "; ".join(problems)
            + ". Is --model right for this checkpoint (alt_gvt_large = twins_svt_large), "
            "and is this the right file?"
        )
    model.load_state_dict(state, strict=True)
    return {
        "checkpoint": str(path),
        "checkpoint_sha256": cached_sha256(path),
        "checkpoint_format": where,
        "stripped_module_prefix": bool(prefixed),
        "num_tensors": len(state),
    }


def describe_weights(
    *, resume: str | Path | None, random_init: bool, seed: int | None, checkpoint_sha256: str | None = None
) -> dict[str, Any]:
    """The weights record every output carries, so nobody mistakes random weights for trained ones."""
    if random_init:
        return {
            "weights": f"random-init seed={seed} (not trained weights)",
            "random_init": True,
            "seed": seed,
            "checkpoint": None,
            "checkpoint_sha256": None,
        }
    return {
        "weights": f"checkpoint {resume} sha256={checkpoint_sha256}",
        "random_init": False,
        "seed": None,
        "checkpoint": str(resume),
        "checkpoint_sha256": checkpoint_sha256,
    }


def load_model(
    model_name: str = DEFAULT_MODEL, resume: str | Path | None = None, random_init: bool = False, seed: int = 0
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build ``model_name`` and give it weights; return ``(model, weights record)``.

    Random init seeds torch before the model is created, so the same seed gives the same weights.
    """
    import torch

    check_weights_choice(resume, random_init)
    start = time.perf_counter()
    if random_init:
        log.info("Building %s with RANDOM weights, seed=%d (not trained weights)", model_name, seed)
        torch.manual_seed(seed)
        model = build_model(model_name)
        weights = describe_weights(resume=None, random_init=True, seed=seed)
    else:
        log.info("Building %s", model_name)
        model = build_model(model_name)
        log.info("Loading checkpoint %s", resume)
        loaded = load_checkpoint(model, Path(resume))  # type: ignore[arg-type]
        weights = describe_weights(
            resume=resume, random_init=False, seed=None, checkpoint_sha256=loaded["checkpoint_sha256"]
        )
        weights["checkpoint_format"] = loaded["checkpoint_format"]
    num_params = sum(p.numel() for p in model.parameters())
    log.info(
        "Model %s ready in %.1f s: %s parameters, weights: %s",
        model_name,
        time.perf_counter() - start,
        f"{num_params:,}",
        weights["weights"],
    )
    return model, weights


# -------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known, expected warnings (they would bury the log on every run).

    - the legacy-exporter deprecation notices: the TorchScript exporter is chosen on purpose (the dynamo
      exporter fixes batch=1 from a batch-1 example and fails on 5-D SDPA; the recipe targets opset 11);
    - TracerWarning on Python booleans: Twins' ``if pad_r > 0 or pad_b > 0`` depends only on the spatial size,
      which is fixed at 224 for this model; the batch dimension stays dynamic (checked after export).
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r"The feature will be removed.*")
        yield


def parity_path(output: str | Path) -> Path:
    """``<output stem>.parity.json`` beside the model."""
    output = Path(output)
    return output.with_name(output.stem + ".parity.json")


def check_parity(
    onnx_path: Path,
    model: torch.nn.Module,
    *,
    batch: int = 2,
    seed: int = 1234,
    atol: float = 1e-3,
    min_top1_agreement: float = 1.0,
) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs PyTorch on ``batch`` seeded random images; return numbers and failures.

    Also runs the first image alone: a batch size the tracer baked into a reshape passes at the example's
    batch size but fails at batch 1. Nothing is raised here; the caller records and then decides.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    failures: list[str] = []
    inputs, outputs = session.get_inputs(), session.get_outputs()
    input_shape, output_shape = list(inputs[0].shape), list(outputs[0].shape)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        failures.append(
            f"graph inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}, "
            f"expected [{INPUT_NAME!r}] / [{OUTPUT_NAME!r}]"
        )
    if not isinstance(input_shape[0], str) or not isinstance(output_shape[0], str):
        failures.append(f"batch dimension is not symbolic: input {input_shape}, output {output_shape}")

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    got_single = session.run([OUTPUT_NAME], {INPUT_NAME: images[:1]})[0]
    if got.shape != expected.shape or got_single.shape != expected[:1].shape:
        failures.append(
            f"ONNX output shapes {got.shape} (batch {batch}) and {got_single.shape} (batch 1), PyTorch {expected.shape}"
        )
        max_diff = single_diff = float("inf")
        agreement = 0.0
    else:
        max_diff = float(np.abs(got - expected).max())
        single_diff = float(np.abs(got_single - expected[:1]).max())
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    if not max_diff <= atol:
        failures.append(f"max abs diff {max_diff:.3g} > atol {atol:g}")
    if not single_diff <= atol:
        failures.append(f"batch-1 max abs diff {single_diff:.3g} > atol {atol:g}")
    if agreement < min_top1_agreement:
        failures.append(f"top-1 agreement {agreement:.1%} < {min_top1_agreement:.1%}")
    return {
        "passed": not failures,
        "failures": failures,
        "batch": batch,
        "seed": seed,
        "atol": atol,
        "min_top1_agreement": min_top1_agreement,
        "max_abs_diff": max_diff,
        "batch1_max_abs_diff": single_diff,
        "top1_agreement": agreement,
        "input_shape": input_shape,
        "output_shape": output_shape,
        "provider": "CPUExecutionProvider",
    }


def parity_line(parity: Mapping[str, Any]) -> str:
    status = "passed" if parity["passed"] else "FAILED: " + "; ".join(parity["failures"])
    return (
        f"Parity ONNX Runtime vs PyTorch on {parity['batch']} random images: max abs diff "
        f"{parity['max_abs_diff']:.3g} (batch 1: {parity['batch1_max_abs_diff']:.3g}), top-1 agreement "
        f"{parity['top1_agreement']:.1%}, atol {parity['atol']:g}: {status}"
    )


def export_onnx(
    output: str | Path,
    *,
    space_on: str | Path | None = None,
    space_advice: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Export and check (see :func:`_export_onnx` for ``options`` and the record); a full disk ends in one clear
    :class:`InputError`: "no space left on <space_on>" (default: the output's folder), with ``space_advice``.

    The ONNX file is written under a temp name and removed when the write fails: nothing half-written stays.
    """
    where = Path(space_on) if space_on is not None else Path(output).parent
    advice = space_advice or (
        "free space there (twins_svt_large's ONNX file is about 380 MiB, written whole before it is renamed) "
        "or pass another --output"
    )
    with no_space_is_input_error(where, advice):
        return _export_onnx(output, **options)


def _export_onnx(
    output: str | Path,
    *,
    model_name: str = DEFAULT_MODEL,
    resume: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    parity_batch: int = 2,
    parity_seed: int = 1234,
    atol: float = 1e-3,
    min_top1_agreement: float = 1.0,
) -> dict[str, Any]:
    """Export ``model_name`` with the given weights to ``output`` and check it; return the record.

    The record (also written to ``<output stem>.parity.json``) holds the ONNX path and sha256, the weights
    (checkpoint and hash, or "random-init seed=S (not trained weights)"), parity numbers, versions and timings.
    Raises ParityError when ONNX Runtime disagrees with PyTorch beyond ``atol`` / ``min_top1_agreement``; the
    ONNX file is kept for inspection and the parity JSON says ``passed: false``.
    """
    import onnx
    import torch

    output = Path(output)
    check_weights_choice(resume, random_init)
    if opset < 9:
        raise InputError(f"--opset {opset} is too old for this model (GELU needs Erf): use 11 (the recipe's) or newer")
    if parity_batch < 1:
        raise InputError(f"--parity-batch {parity_batch} must be at least 1")
    if atol < 0 or not 0.0 <= min_top1_agreement <= 1.0:
        raise InputError(
            f"tolerances out of range: atol {atol} must be >= 0, min top-1 agreement "
            f"{min_top1_agreement} must be within [0, 1]"
        )
    seconds: dict[str, float] = {}
    total_start = time.perf_counter()

    start = time.perf_counter()
    model, weights = load_model(model_name, resume, random_init, seed)
    seconds["load"] = time.perf_counter() - start

    log.info("Exporting %s to %s (TorchScript exporter, opset %d, dynamic batch)", model_name, output, opset)
    start = time.perf_counter()
    example = torch.randn(EXAMPLE_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with atomic_path(output) as tmp:
        try:
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    export_params=True,
                    opset_version=opset,
                    do_constant_folding=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
        except Exception as exc:
            if is_no_space(exc):  # not the exporter's fault: another opset would fail the same way
                raise
            raise ToolError(
                f"torch.onnx.export of {model_name} at opset {opset} failed: {exc}; try another "
                "--opset (17 is known to work with this torch)"
            ) from exc
    seconds["export"] = time.perf_counter() - start
    size = output.stat().st_size
    log.info("Exported %s (%.1f MiB) in %.1f s", output, size / 2**20, seconds["export"])

    start = time.perf_counter()
    try:
        onnx.checker.check_model(str(output))  # path form: the model is ~379 MB, over the in-memory proto limit
    except onnx.checker.ValidationError as exc:
        raise ToolError(f"onnx.checker rejected {output} (kept for inspection): {exc}") from exc
    seconds["check"] = time.perf_counter() - start
    log.info("onnx.checker passed in %.1f s", seconds["check"])

    log.info("Parity check: ONNX Runtime vs PyTorch on %d random images (seed %d)", parity_batch, parity_seed)
    start = time.perf_counter()
    parity = check_parity(
        output, model, batch=parity_batch, seed=parity_seed, atol=atol, min_top1_agreement=min_top1_agreement
    )
    seconds["parity"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - total_start

    record: dict[str, Any] = {
        "onnx": str(output),
        "sha256": cached_sha256(output),
        "size_bytes": size,
        "model": model_name,
        "opset": opset,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        **weights,
        "parity": parity,
        "parity_json": str(parity_path(output)),
        "versions": software_versions(_EXPORT_STACK),
        "export_seconds": seconds["export"],
        "seconds": seconds,
    }
    write_json_atomic(parity_path(output), record)
    log.info("%s", parity_line(parity))
    log.info("Weights: %s", weights["weights"])
    if not parity["passed"]:
        raise ParityError(
            f"ONNX model {output} disagrees with PyTorch {model_name} ({weights['weights']}): "
            + "; ".join(parity["failures"])
            + f". The file is kept for inspection; details in {parity_path(output)}"
        )
    return record


# ----------------------------------------------------------------------------------------- cached step


def _rewrite_paths(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _rewrite_paths(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite_paths(v, old, new) for v in obj]
    return obj


def prepare_model(
    cache_root: str | Path,
    *,
    model_name: str = DEFAULT_MODEL,
    resume: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    opset: int = 11,
) -> dict[str, Any]:
    """Export (or reuse) the ONNX model keyed by checkpoint hash + export options + exporter versions."""
    resume = resume or None  # an empty Param means no checkpoint
    check_weights_choice(resume, random_init)
    if resume:
        if Path(resume).is_dir():
            raise InputError(
                f"checkpoint {resume} is a folder, not a checkpoint file: pass the .pth file itself "
                f"(--resume, or the DAG's 'Checkpoint' Param), e.g. {Path(resume) / 'alt_gvt_large.pth'}"
            )
        if not Path(resume).is_file():
            raise InputError(
                f"checkpoint {resume} does not exist: pass the path of alt_gvt_large.pth "
                f"(or use --random-init --seed S for a weights-free check)"
            )
        weights_id: dict[str, Any] = {"checkpoint_sha256": cached_sha256(resume)}
    else:
        weights_id = {"random_init_seed": seed}
    versions = software_versions()
    key = sha256_json(
        {
            "weights": weights_id,
            "model": model_name,
            "opset": opset,
            "exporter": {k: versions.get(k) for k in ("torch", "timm", "onnx", "twins-tasks")},
        }
    )[:16]
    section = Path(cache_root) / "onnx"
    sweep_stale_temps(section)  # a killed export leaves ~380 MB under a temp name
    target = section / f"{model_name}_{key}"
    record_path = target / EXPORT_RECORD
    mark_used(target)  # before the check: the cache budget keeps what a run is about to reuse
    record = load_record(record_path, "onnx", path_keys=_EXPORT_PATHS, size_key="size_bytes")
    if record is not None:
        log.info(
            "Reusing ONNX model %s (%s; checkpoint hash and export options unchanged; parity was max abs diff %.2e)",
            record["onnx"],
            record["weights"],
            record["parity"]["max_abs_diff"],
        )
        return {**record, "cached": True}
    discard_incomplete(target)
    with atomic_dir(target) as tmp:
        record = export_onnx(
            tmp / f"{model_name}.onnx",
            space_on=Path(cache_root),
            space_advice="free space in the cache (about 380 MiB per exported model) or use another --work_dir",
            model_name=model_name,
            resume=resume,
            random_init=random_init,
            seed=seed,
            opset=opset,
        )
        record = _rewrite_paths(record, str(tmp), str(target))
        # What the reference step needs to rebuild the same PyTorch model.
        record.update(
            key=key,
            model_name=model_name,
            resume=str(resume) if resume else None,
            random_init=bool(random_init),
            seed=seed,
            opset=opset,
        )
        write_json_atomic(tmp / EXPORT_RECORD, relative_paths(record, target, _EXPORT_PATHS))
    return {**require_record(record_path, "onnx", path_keys=_EXPORT_PATHS, size_key="size_bytes"), "cached": False}
