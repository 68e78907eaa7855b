"""The Ascend backend: ``atc`` compiles, ``python -m ais_bench`` infers and measures, ``npu-smi`` names the chip.

The commands are built in :mod:`.commands`, the chip table read in :mod:`.npu_smi`, the CANN environment
loaded in :mod:`.cann_env`; this module runs them in order and checks what they leave behind
(:mod:`.artifacts`). The CANN
environment (``set_env.sh``) is loaded once per backend instance and handed to every tool; user values
only ever reach a tool as single literal arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from ...checks import check_batch_size
from ...constants import OUTPUT_FORMATS
from ...errors import InputError, MissingOutputError, ToolError
from ...files import sha256_file
from ...layout import check_output_stems, list_inputs, output_path, output_stem
from ...perf import parse_summary
from ...toolrun import ToolResult, ToolRunner, run_tool
from ...types import CompileResult, InferResult, PerfResult
from ..base import Backend
from .artifacts import clear_previous_outputs, find_artifacts, read_summary
from .cann_env import cann_version, find_tool, load_cann_env
from .commands import (
    AIS_BENCH_EXITS,
    TAIL_LINES,
    ais_bench_infer_command,
    ais_bench_perf_command,
    atc_command,
    error_codes,
    failure_reason,
    tail,
)
from .npu_smi import IdlePolicy, NpuDevice, find_device, read_npu_smi, wait_until_idle
from .options import AscendOptions

log = logging.getLogger(__name__)

# A result-folder or artifact name: one path component, not an option, no shell or path syntax.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
_NPU_SMI_PLACES = ("/usr/local/sbin/npu-smi", "/usr/local/bin/npu-smi")


class AscendBackend(Backend):
    """``atc`` compiles, ``python -m ais_bench`` infers and measures, ``npu-smi`` names the chip.

    :param options: the settings (:class:`AscendOptions`); keyword arguments build or override them, so
        ``AscendBackend(device=1, cann_env=...)`` and ``get_backend("ascend", **options)`` work too.
    :param runner: runs a tool (argv, env, cwd, timeout, title) and returns a ToolResult; the Airflow hook
        passes itself so that output streams into the task log and ``on_kill`` can stop the tool.
    """

    name: ClassVar[str] = "ascend"
    artifact_suffix: ClassVar[str] = ".om"

    def __init__(self, options: AscendOptions | None = None, *, runner: ToolRunner | None = None, **fields: Any):
        try:
            self.options = dataclasses.replace(options, **fields) if options else AscendOptions(**fields)
        except TypeError as exc:  # an unknown keyword: name the ones there are
            known = ", ".join(f.name for f in dataclasses.fields(AscendOptions))
            raise InputError(f"unknown Ascend backend option: {exc}; options are {known}") from None
        self.runner: ToolRunner = runner or run_tool
        self.idle = IdlePolicy(self.options.idle_aicore_max, self.options.idle_memory_max_mb)

    def with_device(self, device: int) -> AscendBackend:
        """The same backend on another chip (e.g. the one a :func:`twins_tasks.devices.lease_chip` gave).

        The CANN environment already loaded is shared; ``soc_version`` is read again for the new chip.
        """
        other = AscendBackend(dataclasses.replace(self.options, device=device), runner=self.runner)
        if "env" in self.__dict__:
            other.__dict__["env"] = self.env
        return other

    @property
    def device(self) -> int:
        return self.options.device

    @property
    def soc_version(self) -> str:
        return self.options.soc_version

    @property
    def cann_env(self) -> str:
        return str(self.options.cann_env)

    # -- environment and device ----------------------------------------------------------------------------

    @functools.cached_property
    def env(self) -> dict[str, str]:
        """The CANN environment (sourced once), plus unbuffered Python so ais_bench's lines stream live."""
        env = load_cann_env(self.cann_env)
        env["PYTHONUNBUFFERED"] = "1"
        log.info(
            "Loaded CANN environment from %s (toolkit %s)", self.cann_env, env.get("ASCEND_TOOLKIT_HOME", "unknown")
        )
        return env

    def _require_tool(self, tool: str, what: str) -> str:
        """Full path of ``tool`` on the CANN environment's PATH, or an error saying what to install."""
        found = find_tool(tool, self.env)
        if not found:
            raise InputError(f"{tool} not found on PATH after sourcing {self.cann_env}: {what}")
        return found

    def _npu_smi(self) -> str:
        what = (
            "install the Ascend NPU driver (it provides npu-smi, usually /usr/local/sbin/npu-smi), or, to "
            "compile without an NPU, set soc_version explicitly (e.g. Ascend310P3)"
        )
        try:
            return self._require_tool(self.options.npu_smi_path, what)
        except InputError:
            # The driver installs npu-smi in /usr/local/sbin, which some images leave off PATH.
            if self.options.npu_smi_path == "npu-smi":
                for candidate in _NPU_SMI_PLACES:
                    if os.access(candidate, os.X_OK):
                        return candidate
            raise

    def npu_devices(self) -> list[NpuDevice]:
        """Run ``npu-smi info`` (through the runner: a killed task stops it) and parse its table."""
        return read_npu_smi(self._npu_smi(), runner=self.runner, env=self.env)

    def list_chips(self) -> list[int]:
        """Every chip's logical device id (what ``ais_bench --device`` takes), once each, in ``npu-smi info`` order
        (``device_ids = auto``)."""
        return list(dict.fromkeys(dev.device_id for dev in self.npu_devices()))

    def device_info(self) -> NpuDevice:
        return find_device(self.npu_devices(), self.device)

    @functools.cached_property
    def resolved_soc_version(self) -> str:
        if self.soc_version != "auto":
            return self.soc_version
        dev = self.device_info()
        log.info("soc_version auto: %s from npu-smi info (%s)", dev.soc_version, dev.status())
        return dev.soc_version

    def wait_until_idle(self, device: int | None = None) -> NpuDevice:
        """Poll ``npu-smi info`` until the device is idle; a ToolError after ``idle_wait_s``."""
        return wait_until_idle(
            self.npu_devices,
            self.device if device is None else device,
            self.idle,
            wait_s=self.options.idle_wait_s,
            poll_s=self.options.idle_poll_s,
        )

    # -- running tools -------------------------------------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float | None, title: str, cwd: str | None = None) -> ToolResult:
        return self.runner(argv, env=self.env, cwd=cwd, timeout=timeout, title=title)

    def _ais_bench_failure(self, result: ToolResult, what: str, timeout: float | None) -> ToolError:
        reason = failure_reason(result, timeout, exit_meanings=AIS_BENCH_EXITS)
        hint = ""
        if "No module named ais_bench" in result.text:
            hint = (
                f" ais_bench is not installed for {self.options.ais_bench_python}: install the ais_bench and "
                "aclruntime wheels (Ascend tools, ais-bench_workload) into it, or set ais_bench_python to the "
                "interpreter that has them."
            )
        return ToolError(
            f"ais_bench {what} {reason}.{hint}\nLast lines:\n{tail(result)}",
            exit_code=result.exit_code,
            lines=result.tail(TAIL_LINES),
        )

    # -- Backend interface ---------------------------------------------------------------------------------

    def atc_command(self, model: Path, output: str | os.PathLike, batch_size: int) -> list[str]:
        o = self.options
        return atc_command(
            model,
            output,
            batch_size,
            self.resolved_soc_version,
            atc=o.atc_path,
            precision_mode=o.precision_mode,
            op_select_implmode=o.op_select_implmode,
            dynamic_batch_size=str(o.dynamic_batch_size) if o.dynamic_batch_size else None,
            insert_op_conf=o.insert_op_conf,
            output_type=o.output_type,
        )

    def _dym_batch(self, batch_size: int) -> int | None:
        """With a dynamic-batch model ais_bench must be told which batch size to run (``--dymBatch``)."""
        sizes = self.options.dynamic_sizes
        if not sizes:
            return None
        if batch_size not in sizes:
            raise InputError(
                f"batch size {batch_size} is not one of dynamic_batch_size={self.options.dynamic_batch_size}"
            )
        return batch_size

    def compile(self, model: Path, batch_size: int, output_dir: Path, *, name: str | None = None) -> CompileResult:
        """``atc`` the ONNX model for ``batch_size``; the artifact is ``<output_dir>/<name>[_linux_<arch>].om``."""
        model = Path(model).resolve()
        if not model.is_file():
            raise InputError(f"ONNX model {model} not found: run `twins pth2onnx` first")
        batch_size = check_batch_size(batch_size)
        self._dym_batch(batch_size)
        # A name given by the caller must be plain; the default comes from the model's own file name, which
        # is one path component already and reaches atc as part of one literal argument.
        name = _check_plain_name("name", name) if name is not None else f"{model.stem}_bs{batch_size}"
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        prefix = output_dir / name
        for stale in find_artifacts(prefix):  # a leftover would pass for this run's result
            log.info("Removing previous artifact %s before compiling", stale)
            stale.unlink()
        self._require_tool(
            self.options.atc_path,
            "install the CANN toolkit (Ascend-cann-toolkit_*.run provides atc) or fix cann_env / atc_path",
        )
        argv = self.atc_command(model, prefix, batch_size)
        timeout = self.options.compile_timeout
        # cwd = output_dir: atc drops fusion_result.json and kernel_meta/ into its working directory.
        result = self._run(argv, timeout=timeout, title=f"atc: {name}", cwd=str(output_dir))
        found = find_artifacts(prefix)
        if result.exit_code != 0 or result.timed_out or len(found) != 1:
            if result.exit_code != 0 or result.timed_out:
                reason = failure_reason(result, timeout)
            elif not found:
                reason = f"exited 0 but wrote no {prefix}*.om"
            else:
                reason = f"wrote {len(found)} artifacts ({', '.join(p.name for p in found)}), expected one"
            raise ToolError(
                f"atc {reason} compiling {model} for batch size {batch_size} ({self.resolved_soc_version}); "
                f"error codes: {', '.join(error_codes(result.lines)) or 'none printed'}. Details: atc's log under "
                f"$ASCEND_PROCESS_LOG_PATH or ~/ascend/log; look the codes up in the CANN error-code reference."
                f"\nLast lines:\n{tail(result)}",
                exit_code=result.exit_code,
                lines=result.tail(TAIL_LINES),
            )
        return CompileResult(
            artifact=str(found[0]),
            batch_size=batch_size,
            compile_seconds=result.seconds,
            backend=self.name,
            command=argv,
        )

    def infer(
        self,
        artifact: Path,
        inputs: str | Path,
        batch_size: int,
        output: Path,
        output_dirname: str,
        outfmt: str = "BIN",
    ) -> InferResult:
        """Run every input with ais_bench; check one output per input; read the summary JSON."""
        artifact = _existing_artifact(artifact)
        batch_size = check_batch_size(batch_size)
        dym = self._dym_batch(batch_size)
        output_dirname = _check_plain_name("output_dirname", output_dirname)
        outfmt = str(outfmt).upper()
        if outfmt not in OUTPUT_FORMATS:
            raise InputError(f"outfmt={outfmt!r} is not allowed: choose one of {', '.join(OUTPUT_FORMATS)}")
        files = list_inputs(inputs)
        # ais_bench names each output after its input's name up to the first dot: two such names would
        # overwrite each other's output, and the run would look short of outputs.
        check_output_stems(files)
        # Absolute paths: the runner may use another working directory, and no value can start with '-'.
        input_arg = (
            ",".join(str(Path(p).resolve()) for p in str(inputs).split(",") if p)
            if isinstance(inputs, (str, os.PathLike))
            else ",".join(str(p.resolve()) for p in files)
        )
        output = Path(output).resolve()
        out_dir = output / output_dirname
        clear_previous_outputs(output, output_dirname)
        output.mkdir(parents=True, exist_ok=True)
        argv = ais_bench_infer_command(
            artifact,
            input_arg,
            batch_size,
            output,
            output_dirname,
            outfmt,
            device=self.device,
            python=str(self.options.ais_bench_python),
            dym_batch=dym,
        )
        timeout = self.options.infer_timeout
        result = self._run(argv, timeout=timeout, title=f"ais_bench: {output_dirname}")
        if result.exit_code != 0 or result.timed_out:
            raise self._ais_bench_failure(result, f"inference on {artifact}", timeout)
        missing = [output_stem(p) for p in files if not output_path(out_dir, output_stem(p), 0, outfmt).is_file()]
        if missing:
            raise MissingOutputError(
                f"ais_bench exited 0 but {len(missing)} of {len(files)} outputs are missing in {out_dir} "
                f"(expected <stem>_0.{outfmt.lower()} per input; first missing: {', '.join(missing[:5])}): "
                "check the ais_bench lines above and the free disk space"
            )
        summary = read_summary(output, output_dirname)
        seconds = result.seconds
        return InferResult(
            output_dir=str(out_dir),
            num_inputs=len(files),
            num_outputs=len(files),
            batch_size=batch_size,
            seconds=seconds,
            throughput=len(files) / seconds if seconds > 0 else 0.0,
            summary=summary,
        )

    def perf(self, artifact: Path, batch_size: int, *, loop: int = 20, warmup: int = 1) -> PerfResult:
        """Wait for an idle device, then ``ais_bench --loop``; parse its Performance Summary."""
        artifact = _existing_artifact(artifact)
        batch_size = check_batch_size(batch_size)
        dym = self._dym_batch(batch_size)
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise InputError(f"loop={loop!r} must be an integer >= 1")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise InputError(f"warmup={warmup!r} must be an integer >= 0")
        if self.options.idle_aicore_max is None:
            log.warning(
                "Idle check skipped (idle_aicore_max=None): another job on NPU %d would lower these "
                "numbers, and nothing checked that there is none",
                self.device,
            )
            soc = self.soc_version if self.soc_version != "auto" else self.resolved_soc_version
        else:
            soc = self.wait_until_idle(self.device).soc_version
        argv = ais_bench_perf_command(
            artifact,
            batch_size,
            loop=loop,
            warmup=warmup,
            device=self.device,
            python=str(self.options.ais_bench_python),
            dym_batch=dym,
        )
        timeout = self.options.perf_timeout
        result = self._run(argv, timeout=timeout, title=f"ais_bench perf: bs {batch_size}")
        if result.exit_code != 0 or result.timed_out:
            raise self._ais_bench_failure(result, f"performance run on {artifact}", timeout)
        perf = parse_summary(result.text, loop=loop, backend=self.name, device=f"{soc}:{self.device}")
        if perf.batch_size != batch_size:
            raise ToolError(
                f"ais_bench reported batch size {perf.batch_size} in its throughput line, expected "
                f"{batch_size}: is {artifact} compiled for another batch size?"
            )
        return perf

    def options_key(self) -> dict[str, Any]:
        o = self.options
        return {
            "soc_version": self.resolved_soc_version,
            "precision_mode": o.precision_mode,
            "op_select_implmode": o.op_select_implmode,
            "dynamic_batch_size": o.dynamic_batch_size,
            "insert_op_conf_sha256": sha256_file(o.insert_op_conf) if o.insert_op_conf else None,
            "output_type": o.output_type,
            # A CANN upgrade changes what atc produces: its version (or at least which toolkit) is in the key.
            "cann_version": self.cann_version(),
            "cann_env": self.cann_env,
        }

    def cann_version(self) -> str:
        """The toolkit version from its version files, else the resolved ASCEND_TOOLKIT_HOME dir name."""
        return cann_version(self.env)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "backend": self.name,
            "device": self.device,
            "cann_env": self.cann_env,
            "cann_version": self.cann_version(),
            "ais_bench_python": self.options.ais_bench_python,
        }
        try:
            dev = self.device_info()
        except (ToolError, InputError) as exc:  # a compile-only host has no NPU: say so, don't fail the record
            info.update(chip=None, soc_version=self.soc_version, npu_smi_error=str(exc).splitlines()[0])
        else:
            info.update(
                chip=dev.chip_name,
                soc_version=self.resolved_soc_version,
                npu_id=dev.npu_id,
                chip_id=dev.chip_id,
                bus_id=dev.bus_id,
                health=dev.health,
            )
        return info


def _check_plain_name(key: str, value: str) -> str:
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or value in (".", ".."):
        raise InputError(
            f"{key}={value!r} must be a plain name (letters, digits, '_', '.', '-', '+', '='; "
            "no path separator, space or shell syntax; not starting with '-' or '.')"
        )
    return value


def _existing_artifact(artifact: str | os.PathLike) -> Path:
    path = Path(artifact).resolve()
    if not path.is_file():
        raise InputError(f"compiled model {path} not found: run the compile step first")
    if path.suffix != ".om":
        raise InputError(f"compiled model {path} is not an .om file (atc's output)")
    return path
