"""The recipe's tool commands as argv lists, and how to read a failed tool run.

Every command is the reference recipe's, flag for flag (shared/toolchain-contract.md), so a result here can
be compared with a hand-run recipe. Pure functions: tests compare them with the recipe's own text.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence

from ...toolrun import ToolResult

# How many of a tool's last lines an error message carries.
TAIL_LINES = 20
# atc/ACL error codes: E10001 (input), EZ3003 (unsupported operator), EE1001, E19999 ...
_ERROR_CODE = re.compile(r"\bE[A-Z0-9]\d{4}\b")


def atc_command(
    model: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int,
    soc_version: str,
    *,
    atc: str = "atc",
    precision_mode: str | None = None,
    op_select_implmode: str | None = None,
    dynamic_batch_size: str | None = None,
    insert_op_conf: str | os.PathLike | None = None,
    output_type: str | None = None,
) -> list[str]:
    """The recipe's atc command as argv; ``output`` is the artifact path without ``.om`` (atc appends it).

    With ``dynamic_batch_size`` ("1,2,4,8") the batch dimension of ``--input_shape`` is -1, as atc requires.
    """
    batch = "-1" if dynamic_batch_size else str(batch_size)
    argv = [
        atc,
        "--framework=5",
        f"--model={model}",
        f"--output={output}",
        "--input_format=NCHW",
        f"--input_shape=input:{batch},3,224,224",
        "--log=error",
        f"--soc_version={soc_version}",
    ]
    if precision_mode:
        argv.append(f"--precision_mode={precision_mode}")
    if op_select_implmode:
        argv.append(f"--op_select_implmode={op_select_implmode}")
    if dynamic_batch_size:
        argv.append(f"--dynamic_batch_size={dynamic_batch_size}")
    if insert_op_conf:
        argv.append(f"--insert_op_conf={insert_op_conf}")
    if output_type:
        argv.append(f"--output_type={output_type}")
    return argv


def ais_bench_infer_command(
    artifact: str | os.PathLike,
    inputs: str | os.PathLike,
    batch_size: int,
    output: str | os.PathLike,
    output_dirname: str,
    outfmt: str = "TXT",
    *,
    device: int = 0,
    python: str = "python",
    dym_batch: int | None = None,
) -> list[str]:
    """The recipe's inference command as argv, with ``--device`` appended (the recipe relies on device 0)."""
    argv = [
        python,
        "-m",
        "ais_bench",
        "--model",
        str(artifact),
        "--input",
        str(inputs),
        "--batchsize",
        str(batch_size),
        "--output",
        str(output),
        "--output_dirname",
        output_dirname,
        "--outfmt",
        outfmt,
        "--device",
        str(device),
    ]
    if dym_batch is not None:
        argv += ["--dymBatch", str(dym_batch)]
    return argv


def ais_bench_perf_command(
    artifact: str | os.PathLike,
    batch_size: int,
    *,
    loop: int = 20,
    warmup: int = 1,
    device: int = 0,
    python: str = "python",
    dym_batch: int | None = None,
) -> list[str]:
    """The recipe's pure-performance command as argv, with ``--device`` appended.

    ``--warmup_count`` is added only when it differs from ais_bench's default (1), so the default
    command stays the recipe's.
    """
    argv = [
        python,
        "-m",
        "ais_bench",
        "--model",
        str(artifact),
        "--loop",
        str(loop),
        "--batchsize",
        str(batch_size),
        "--device",
        str(device),
    ]
    if warmup != 1:
        argv += ["--warmup_count", str(warmup)]
    if dym_batch is not None:
        argv += ["--dymBatch", str(dym_batch)]
    return argv


def error_codes(lines: Sequence[str]) -> list[str]:
    """The CANN error codes (``E10001``, ``EZ3003`` ...) a tool printed, first occurrence first, once each."""
    seen: dict[str, None] = {}
    for line in lines:
        for code in _ERROR_CODE.findall(line):
            seen.setdefault(code, None)
    return list(seen)


def signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)


def failure_reason(result: ToolResult, timeout: float | None, *, exit_meanings: dict[int, str] | None = None) -> str:
    """Why a tool run failed, in words: timed out, stopped by a signal, or its exit code (and its meaning).

    The one place that reads a failed :class:`ToolResult`; ``exit_meanings`` adds the tool's own codes
    (ais_bench: 1 = an uncaught exception, 2 = an argument error).
    """
    if result.timed_out:
        return f"did not finish within {timeout:g} s and was stopped" if timeout else "timed out and was stopped"
    if result.exit_code < 0:
        return f"was stopped by signal {signal_name(-result.exit_code)}"
    meaning = (exit_meanings or {}).get(result.exit_code)
    if meaning:
        return meaning
    return f"failed (exit {result.exit_code})"


# ais_bench's exit codes: argparse exits 2 on a bad argument; anything it raises escapes main() (exit 1).
AIS_BENCH_EXITS = {
    2: "rejected its arguments (exit 2, argument error)",
    1: "crashed (exit 1, an uncaught exception)",
}


def tail(result: ToolResult, n: int = TAIL_LINES) -> str:
    return "\n".join(result.tail(n))
