"""Contract tests for the Ascend backend, against the recipe's text and the toolchain doubles.

No NPU is reachable here: tests/doubles reproduce the documented behaviour of atc, npu-smi and ais_bench
(shared/toolchain-contract.md) and record the argv they receive, so these tests check what we would send
to the real tools and how we read what they print.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.doubles.helpers import FAKE_VARS, SET_ENV, make_inputs, make_model, read_log
from twins_tasks.backends import get_backend
from twins_tasks.backends.ascend import (
    AscendBackend,
    AscendOptions,
    ais_bench_infer_command,
    ais_bench_perf_command,
    atc_command,
    cann_version_from_home,
    find_device,
    parse_npu_smi,
)
from twins_tasks.errors import InputError, MissingOutputError, ToolError
from twins_tasks.layout import read_output
from twins_tasks.perf import parse_summary
from twins_tasks.toolrun import run_tool

# The recipe's commands, verbatim from shared/toolchain-contract.md.
RECIPE_ATC = (
    "atc --framework=5 --model=alt_gvt_large.onnx --output=alt_gvt_large_bs${bs} --input_format=NCHW "
    '--input_shape="input:${bs},3,224,224" --log=error --soc_version=Ascend${chip_name}'
)
RECIPE_INFER = (
    "python -m ais_bench --model alt_gvt_large_bs${bs}.om --input bin_path/ --batchsize ${bs} "
    "--output result --output_dirname alt_gvt_large_bs${bs} --outfmt TXT"
)
RECIPE_PERF = "python -m ais_bench --model X.om --loop 20 --batchsize ${bs}"

# npu-smi info, verbatim from the contract (two 310P3 cards).
NPU_SMI_TABLE = """\
+-------------------+-----------------+------------------------------------------------------+
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 0       310P3     | OK              | 15.8         42                0    / 0              |
| 0       0         | 0000:82:00.0    | 0            1074 / 21534                            |
+===================+=================+======================================================+
| 1       310P3     | OK              | 15.4         43                0    / 0              |
| 0       1         | 0000:89:00.0    | 0            1070 / 21534                            |
+===================+=================+======================================================+
"""


def recipe_argv(text: str, bs: int, chip_name: str = "310P3") -> list[str]:
    return shlex.split(text.replace("${bs}", str(bs)).replace("${chip_name}", chip_name))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The doubles, with a clean FAKE_* environment and a call log; ``fake.backend(**options)``."""
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("TWINS_CANN_ENV", raising=False)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("TWINS_DOUBLES_LOG", str(calls))
    monkeypatch.setenv("FAKE_NPU_LOCK_DIR", str(tmp_path / "npu-locks"))  # two users of one chip fail loudly

    def backend(**options) -> AscendBackend:
        options = {"cann_env": str(SET_ENV), "idle_wait_s": 0, "idle_poll_s": 0.05, **options}
        return AscendBackend(**options)

    fake = SimpleNamespace(
        log=calls,
        model=make_model(tmp_path / "alt_gvt_large.onnx"),
        inputs=tmp_path / "bin_path",
        backend=backend,
        calls=lambda tool=None: read_log(calls, tool),
    )
    make_inputs(fake.inputs, 6)
    return fake


# ---- the commands are the recipe's ------------------------------------------------------------------------


@pytest.mark.parametrize("bs", [1, 4, 64])
def test_atc_command_is_the_recipe_character_for_character(bs):
    expected = recipe_argv(RECIPE_ATC, bs)
    assert atc_command("alt_gvt_large.onnx", f"alt_gvt_large_bs{bs}", bs, "Ascend310P3") == expected
    # The shell's quotes around "input:..." are gone in argv: atc receives the bare value.
    assert f"--input_shape=input:{bs},3,224,224" in expected


@pytest.mark.parametrize("bs", [1, 16])
def test_ais_bench_commands_are_the_recipe_plus_device(bs):
    infer = ais_bench_infer_command(
        f"alt_gvt_large_bs{bs}.om", "bin_path/", bs, "result", f"alt_gvt_large_bs{bs}", "TXT", device=0, python="python"
    )
    recipe = recipe_argv(RECIPE_INFER, bs)
    # The recipe relies on ais_bench's default device 0; we always name the device we checked with npu-smi.
    assert infer[: len(recipe)] == recipe and infer[len(recipe) :] == ["--device", "0"]
    perf = ais_bench_perf_command("X.om", bs, loop=20, warmup=1, device=0, python="python")
    recipe = recipe_argv(RECIPE_PERF, bs)
    assert perf[: len(recipe)] == recipe and perf[len(recipe) :] == ["--device", "0"]
    assert ais_bench_perf_command("X.om", bs, warmup=3, device=2)[-4:] == ["--device", "2", "--warmup_count", "3"]


def test_compile_runs_the_recipe_command_with_absolute_paths(fake, tmp_path):
    result = fake.backend().compile(fake.model, 4, tmp_path / "compiled")
    (call,) = fake.calls("atc")
    prefix = tmp_path / "compiled" / "alt_gvt_large_bs4"
    assert call["argv"][1:] == atc_command(fake.model, prefix, 4, "Ascend310P3")[1:]
    assert Path(call["argv"][0]).name == "atc"
    assert call["cwd"] == str(tmp_path / "compiled")  # atc's fusion_result.json lands beside the artifact
    assert result.artifact == f"{prefix}.om" and result.command[1:] == call["argv"][1:]


# ---- npu-smi ---------------------------------------------------------------------------------------------


def test_parse_npu_smi_on_the_contract_table():
    devices = parse_npu_smi(NPU_SMI_TABLE)
    assert [(d.npu_id, d.chip_id, d.device_id, d.chip_name) for d in devices] == [
        (0, 0, 0, "310P3"),
        (1, 0, 1, "310P3"),
    ]
    second = find_device(devices, 1)
    assert second.soc_version == "Ascend310P3"
    assert (second.bus_id, second.aicore_percent, second.memory_used_mb, second.memory_total_mb) == (
        "0000:89:00.0",
        0.0,
        1070,
        21534,
    )
    assert (second.health, second.power_w, second.temp_c) == ("OK", 15.4, 43.0)


def test_parse_npu_smi_one_device():
    one = "\n".join(NPU_SMI_TABLE.splitlines()[:7]) + "\n"
    (dev,) = parse_npu_smi(one)
    assert (dev.device_id, dev.soc_version, dev.memory_used_mb) == (0, "Ascend310P3", 1074)
    with pytest.raises(InputError, match=r"NPU device 3 is not in `npu-smi info` \(devices: 0 \(Ascend310P3\)\)"):
        find_device([dev], 3)
    with pytest.raises(ToolError, match="no NPU device"):
        find_device(parse_npu_smi(""), 0)


def test_parse_npu_smi_other_layouts():
    """Layouts not in the contract, as other cards print them: two chips under one NPU row (300I Duo), and
    no Device column with HBM memory (910 series). Device ids: Device column, else the NPU id."""
    duo = """\
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 1       310P3     | OK              | NA           54                0    / 0              |
| 0       0         | 0000:05:00.0    | 12           1455 / 44280                            |
| 1       1         | 0000:05:00.0    | 0            1359 / 43693                            |
+===================+=================+======================================================+
"""
    devices = parse_npu_smi(duo)
    assert [(d.npu_id, d.chip_id, d.device_id, d.aicore_percent, d.power_w) for d in devices] == [
        (1, 0, 0, 12.0, None),
        (1, 1, 1, 0.0, None),
    ]
    ascend910 = """\
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 3     910B3               | OK            | 93.6        40                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| 3       0                 | 4242          | python                   | 2048                    |
+===========================+===============+====================================================+
"""
    (dev,) = parse_npu_smi(ascend910)
    assert (dev.device_id, dev.soc_version, dev.used_mb, dev.hbm_total_mb) == (3, "Ascend910B3", 3161, 65536)


def test_npu_smi_double_prints_the_contract_table(fake):
    out = run_tool([str(SET_ENV.parent / "bin" / "npu-smi"), "info"], env={**os.environ, "FAKE_NPU_COUNT": "2"})
    assert out.exit_code == 0
    assert NPU_SMI_TABLE in out.text + "\n"


def test_soc_version_auto_reads_the_chosen_device(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NPU_COUNT", "2")
    monkeypatch.setenv("FAKE_NPU_NAME", "910B3")
    backend = fake.backend(device=1)
    backend.compile(fake.model, 1, tmp_path / "out")
    assert "--soc_version=Ascend910B3" in fake.calls("atc")[0]["argv"]
    assert backend.describe()["bus_id"] == "0000:89:00.0"
    with pytest.raises(InputError, match="NPU device 5 is not in"):
        fake.backend(device=5).compile(fake.model, 1, tmp_path / "out5")
    assert len(fake.calls("atc")) == 1


def test_explicit_soc_version_needs_no_npu(fake, tmp_path):
    fake.backend(soc_version="Ascend310P3", npu_smi_path="/nonexistent/npu-smi").compile(fake.model, 1, tmp_path)
    assert fake.calls("npu-smi") == []


# ---- atc -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "_linux_x86_64"])
def test_compile_finds_the_artifact_with_or_without_arch_suffix(fake, monkeypatch, tmp_path, suffix):
    monkeypatch.setenv("FAKE_ATC_SUFFIX", suffix)
    out = tmp_path / "out"
    (out / "alt_gvt_large_bs16.om").parent.mkdir()
    (out / "alt_gvt_large_bs16.om").write_text("another batch size's artifact in the same folder")
    result = fake.backend().compile(fake.model, 1, out)
    assert result.artifact == str(out / f"alt_gvt_large_bs1{suffix}.om")
    assert json.loads(Path(result.artifact).read_text())["batch"] == 1
    assert result.backend == "ascend" and result.batch_size == 1 and result.compile_seconds > 0


def test_compile_failure_carries_atc_error_codes(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_ATC_FAIL", "1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "alt_gvt_large_bs1.om").write_text("stale artifact of an earlier run")
    with pytest.raises(ToolError) as err:
        fake.backend().compile(fake.model, 1, out)
    message = str(err.value)
    assert "failed (exit 255)" in message and "error codes: E10001, EZ3003" in message
    assert "ATC run failed, Please check the detail log" in message  # the tool's own lines
    assert err.value.exit_code == 255
    assert not list(out.glob("*.om"))  # the stale artifact cannot pass for this run's


def test_compile_rejects_missing_model_and_bad_batch(fake, tmp_path):
    with pytest.raises(InputError, match="ONNX model .*missing.onnx not found"):
        fake.backend().compile(tmp_path / "missing.onnx", 1, tmp_path)
    with pytest.raises(InputError, match="batch size must be an integer >= 1 and <= 256, got 0"):
        fake.backend().compile(fake.model, 0, tmp_path)
    assert fake.calls("atc") == []


# ---- ais_bench -------------------------------------------------------------------------------------------


def compiled(fake, tmp_path, bs: int, **options) -> tuple[AscendBackend, Path]:
    backend = fake.backend(**options)
    return backend, Path(backend.compile(fake.model, bs, tmp_path / "compiled").artifact)


def test_infer_crash_is_exit_1(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_AIS_CRASH", "1")
    backend, om = compiled(fake, tmp_path, 1)
    with pytest.raises(ToolError, match=r"(?s)crashed \(exit 1, an uncaught exception\).*fake ais_bench crash") as err:
        backend.infer(om, fake.inputs, 1, tmp_path / "result", "bs1", "TXT")
    assert err.value.exit_code == 1


def test_infer_argument_error_is_exit_2(fake, tmp_path):
    def runner(argv, **kwargs):  # an ais_bench that does not know one of the flags
        extra = ["--no_such_flag"] if "ais_bench" in argv else []
        return run_tool([*argv, *extra], **kwargs)

    backend, om = compiled(fake, tmp_path, 1, runner=runner)
    with pytest.raises(ToolError, match=r"(?s)argument error.*unrecognized arguments: --no_such_flag") as err:
        backend.infer(om, fake.inputs, 1, tmp_path / "result", "bs1", "TXT")
    assert err.value.exit_code == 2


def test_ais_bench_not_installed_says_so(fake, tmp_path):
    env_script = tmp_path / "set_env.sh"
    env_script.write_text(f'source "{SET_ENV}"\nexport PYTHONPATH=\n')
    backend, om = compiled(fake, tmp_path, 1, cann_env=str(env_script))
    with pytest.raises(ToolError, match="ais_bench is not installed for .*set ais_bench_python"):
        backend.infer(om, fake.inputs, 1, tmp_path / "result", "bs1", "TXT")


def test_missing_output_is_reported_not_hidden_by_an_earlier_run(fake, monkeypatch, tmp_path):
    backend, om = compiled(fake, tmp_path, 4)
    backend.infer(om, fake.inputs, 4, tmp_path / "result", "bs4", "TXT")  # complete run first
    monkeypatch.setenv("FAKE_AIS_DROP", "1")
    with pytest.raises(
        MissingOutputError, match=r"1 of 6 outputs are missing .*first missing: ILSVRC2012_val_00000006"
    ):
        fake.backend().infer(om, fake.inputs, 4, tmp_path / "result", "bs4", "TXT")


@pytest.mark.parametrize("style", ["new", "old"])
def test_infer_reads_the_summary_json_in_either_place(fake, monkeypatch, tmp_path, style):
    monkeypatch.setenv("FAKE_AIS_SUMMARY", style)
    backend, om = compiled(fake, tmp_path, 4)
    result = backend.infer(om, fake.inputs, 4, tmp_path / "result", "alt_gvt_large_bs4", "NPY")
    where = (
        tmp_path / "result" / ("alt_gvt_large_bs4_summary.json" if style == "new" else "alt_gvt_large_bs4/sumary.json")
    )
    assert where.is_file()
    assert result.summary["NPU_compute_time"]["count"] == 2  # 6 inputs at batch 4: two batches
    # summary.py: args is the raw argv list; filesinfo has one entry per input file; pid is the tool's.
    args = result.summary["args"]
    assert args[0].endswith("__main__.py") and args[args.index("--outfmt") + 1] == "NPY"
    files = sorted(fake.inputs.glob("*.bin"))
    assert result.summary["filesinfo"] == {
        str(i): {
            "infiles": [str(path)],
            "outfiles": [str(tmp_path / "result" / "alt_gvt_large_bs4" / f"{path.stem}_0.npy")],
        }
        for i, path in enumerate(files)
    }
    assert isinstance(result.summary["pid"], int)


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_perf_parses_both_throughput_formats(fake, monkeypatch, tmp_path, fmt):
    monkeypatch.setenv("FAKE_AIS_FORMAT", fmt)
    backend, om = compiled(fake, tmp_path, 8)
    perf = backend.perf(om, 8, loop=5)
    (call,) = fake.calls("ais_bench")
    assert call["argv"] == ["--model", str(om), "--loop", "5", "--batchsize", "8", "--device", "0"]
    assert perf.batch_size == 8 and perf.loop == 5 and perf.backend == "ascend"
    assert perf.throughput == pytest.approx(1000 * 8 / perf.mean_ms)
    assert perf.min_ms <= perf.median_ms <= perf.max_ms


def test_perf_waits_for_a_busy_device_then_fails_clearly(fake, monkeypatch, tmp_path):
    # The wait polls more than once even on a loaded host, where one npu-smi (a Python double) takes ~0.5 s.
    monkeypatch.setenv("FAKE_NPU_AICORE", "35")
    backend, om = compiled(fake, tmp_path, 1, soc_version="Ascend310P3", idle_wait_s=3.0, idle_poll_s=0.2)
    with pytest.raises(ToolError) as err:
        backend.perf(om, 1)
    message = str(err.value)
    assert "device 0" in message and "AICore 35%" in message and "memory 1074 MB / 21534 MB" in message
    assert "AICore <= 5%" in message and "requires an idle device" in message
    assert len(fake.calls("npu-smi")) >= 2 and fake.calls("ais_bench") == []


def test_perf_without_idle_check_reads_no_npu_smi(fake, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("FAKE_NPU_AICORE", "90")
    backend, om = compiled(fake, tmp_path, 1, soc_version="Ascend310P3", idle_aicore_max=None)
    perf = backend.perf(om, 1, loop=2)
    assert perf.device == "Ascend310P3:0" and fake.calls("npu-smi") == []
    assert "Idle check skipped" in caplog.text


def test_unreadable_npu_smi_output_is_shown(fake, tmp_path):
    fake_smi = tmp_path / "npu-smi"
    fake_smi.write_text("#!/bin/sh\necho 'npu-smi 99.0 Version: 99.0'\necho '| a new | layout |'\n")
    fake_smi.chmod(0o755)
    with pytest.raises(ToolError, match=r"(?s)found no NPU in the output of `npu-smi info`.*\| a new \| layout \|"):
        fake.backend(npu_smi_path=str(fake_smi)).compile(fake.model, 1, tmp_path / "out")


def test_perf_checks_memory_when_asked(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NPU_MEMORY", "9000")
    backend, om = compiled(fake, tmp_path, 1, idle_memory_max_mb=2000)
    with pytest.raises(ToolError, match=r"memory 9000 MB / 21534 MB.*AICore <= 5% and memory <= 2000 MB"):
        backend.perf(om, 1)


def test_perf_proceeds_once_the_device_is_idle(fake, monkeypatch, tmp_path):
    sequence = tmp_path / "aicore.txt"
    sequence.write_text("80\n40\n3\n")
    backend, om = compiled(fake, tmp_path, 1, soc_version="Ascend310P3", idle_wait_s=30, idle_poll_s=0.05)
    monkeypatch.setenv("FAKE_NPU_AICORE_FILE", str(sequence))
    backend.env["FAKE_NPU_AICORE_FILE"] = str(sequence)  # the CANN env was sourced before the setting
    perf = backend.perf(om, 1, loop=3)
    assert len(fake.calls("npu-smi")) == 3 and perf.loop == 3
    assert [c["tool"] for c in fake.calls()][-2:] == ["npu-smi", "ais_bench"]


def test_infer_timeout_stops_the_tool(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_AIS_SLEEP", "60")
    backend, om = compiled(fake, tmp_path, 1, infer_timeout=1)
    with pytest.raises(ToolError, match="did not finish within 1 s and was stopped"):
        backend.infer(om, fake.inputs, 1, tmp_path / "result", "bs1", "TXT")


@pytest.mark.parametrize("throughput", ["1000*batchsize(64)", "1000*batchsize.mean(64)"])
def test_contract_summary_lines_parse(throughput):
    """The contract's Performance Summary, verbatim, in both ais_bench versions (with --display_all_summary)."""
    text = f"""\
[INFO] -----------------Performance Summary------------------
[INFO] H2D_latency (ms): min = 10.5, max = 11.25, mean = 10.75, median = 10.7, percentile(99%) = 11.2
[INFO] NPU_compute_time (ms): min = 431.9490051269531, max = 432.24200439453125, mean = 432.0568511962891, median = 432.0480041503906, percentile(99%) = 432.2307962036133
[INFO] D2H_latency (ms): min = 0.1, max = 0.3, mean = 0.2, median = 0.2, percentile(99%) = 0.29
[INFO] throughput {throughput}/NPU_compute_time.mean(432.0568511962891): 148.1286544184991
[INFO] ------------------------------------------------------
"""
    perf = parse_summary(text, loop=20)
    assert (perf.batch_size, perf.mean_ms, perf.throughput) == (64, 432.0568511962891, 148.1286544184991)
    assert perf.throughput == pytest.approx(1000 * 64 / perf.mean_ms)
    assert perf.extra["H2D_ms"]["mean"] == 10.75 and perf.extra["D2H_ms"]["p99"] == 0.29


# ---- environment -------------------------------------------------------------------------------------------


def test_missing_cann_env_says_what_to_install(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("TWINS_CANN_ENV", str(tmp_path / "nowhere" / "set_env.sh"))
    backend = AscendBackend()  # default: $TWINS_CANN_ENV
    with pytest.raises(
        InputError,
        match=r"CANN environment script .*nowhere/set_env.sh not found: install the "
        r"CANN toolkit .*TWINS_CANN_ENV / cann_env",
    ):
        backend.compile(fake.model, 1, tmp_path)


def test_missing_atc_after_sourcing_says_what_to_install(fake, tmp_path):
    env_script = tmp_path / "set_env.sh"
    env_script.write_text("export PATH=/usr/bin:/bin\n")
    with pytest.raises(InputError, match=r"atc not found on PATH after sourcing .*install the CANN toolkit"):
        fake.backend(cann_env=str(env_script), soc_version="Ascend310P3").compile(fake.model, 1, tmp_path)


def test_cann_env_is_sourced_once_and_used_for_every_tool(fake, tmp_path):
    backend, om = compiled(fake, tmp_path, 1)
    env = backend.env
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"].startswith(str(SET_ENV.parent / "bin"))
    backend.perf(om, 1, loop=2)
    assert backend.env is env
    assert backend.cann_version() == "0.0.0-double"


def test_cann_version_from_a_latest_link(tmp_path):
    (tmp_path / "8.0.RC2").mkdir()
    (tmp_path / "latest").symlink_to(tmp_path / "8.0.RC2")
    assert cann_version_from_home(tmp_path / "latest") == "8.0.RC2"
    (tmp_path / "8.0.RC2" / "aarch64-linux").mkdir()
    (tmp_path / "8.0.RC2" / "aarch64-linux" / "ascend_toolkit_install.info").write_text("version=8.0.RC2.alpha003\n")
    assert cann_version_from_home(tmp_path / "latest") == "8.0.RC2.alpha003"
    assert cann_version_from_home(tmp_path / "missing") == "unknown"


# ---- no shell anywhere --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["x; rm -rf /", "bs1\n", "../escape", "a/b", "$(touch pwned)", "-rf", ".", ""])
def test_output_dirname_must_be_a_plain_name(fake, tmp_path, bad):
    backend, om = compiled(fake, tmp_path, 1)
    with pytest.raises(InputError, match="output_dirname=.* must be a plain name"):
        backend.infer(om, fake.inputs, 1, tmp_path / "result", bad, "TXT")
    with pytest.raises(InputError, match="name=.* must be a plain name"):
        backend.compile(fake.model, 1, tmp_path / "c", name=bad or "x/y")
    assert fake.calls("ais_bench") == []


def test_shell_metacharacters_in_paths_reach_the_tools_literally(fake, monkeypatch, tmp_path):
    odd = tmp_path / "we$(touch PWNED); `touch PWNED2` 'q' \"d\" & |"
    odd.mkdir()
    monkeypatch.chdir(odd)
    env_script = odd / "set env.sh"
    shutil.copy(SET_ENV, env_script)  # sourced as "$1": the path is never code
    env_script.write_text(env_script.read_text().replace('"$(dirname "${BASH_SOURCE[0]}")"', f'"{SET_ENV.parent}"'))
    model = make_model(odd / "model $(touch PWNED).onnx")
    inputs = odd / "bins;ls"
    make_inputs(inputs, 2)
    backend = fake.backend(cann_env=str(env_script))
    om = Path(backend.compile(model, 2, odd / "out").artifact)
    backend.infer(om, inputs, 2, odd / "res`x`", "bs2", "BIN")
    atc_call, infer_call = fake.calls("atc")[0], fake.calls("ais_bench")[0]
    assert f"--model={model}" in atc_call["argv"]
    assert infer_call["argv"][infer_call["argv"].index("--input") + 1] == str(inputs)
    assert len(list((odd / "res`x`" / "bs2").glob("*_0.bin"))) == 2
    assert not list(tmp_path.rglob("PWNED*")) and not Path("PWNED").exists()


# ---- options -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, allowed",
    [
        (
            "precision_mode",
            "fp8",
            "force_fp16, allow_mix_precision, allow_fp32_to_fp16, must_keep_origin_dtype, force_fp32",
        ),
        ("op_select_implmode", "fastest", "high_precision, high_performance"),
        ("output_type", "FP64", "FP32, FP16, UINT8, INT8"),
    ],
)
def test_option_values_are_checked(option, value, allowed):
    with pytest.raises(InputError) as err:
        AscendBackend(**{option: value})
    assert str(err.value) == f"{option}={value!r} is not allowed: choose one of {allowed}"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"dynamic_batch_size": "1,x"}, "dynamic_batch_size='1,x' must be comma-separated integers"),
        ({"dynamic_batch_size": "0,2"}, "must be distinct integers >= 1"),
        ({"insert_op_conf": "/nonexistent/aipp.cfg"}, "insert_op_conf /nonexistent/aipp.cfg not found"),
        ({"soc_version": "Ascend310P3 --log=debug"}, "soc_version=.* must be 'auto' or an Ascend SoC name"),
        ({"device": -1}, "device=-1 must be an integer from 0 to 255"),
        ({"device": 256}, "device=256 must be an integer from 0 to 255"),
    ],
)
def test_bad_options_are_rejected(options, match):
    with pytest.raises(InputError, match=match):
        AscendBackend(**options)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"device": "0"}, r"device='0' must be an integer from 0 to 255"),
        ({"device": True}, r"device=True must be an integer from 0 to 255"),
        ({"infer_timeout": "60"}, r"infer_timeout='60' must be a non-negative number or None"),
        ({"idle_aicore_max": "5"}, r"idle_aicore_max='5' must be a non-negative number"),
        ({"idle_memory_max_mb": 1.5}, r"idle_memory_max_mb=1.5 must be a non-negative integer"),
        ({"idle_wait_s": None}, r"idle_wait_s=None: give a number of seconds"),
        ({"no_such_option": 1}, r"unknown Ascend backend option: .*no_such_option.*options are cann_env, device"),
    ],
)
def test_options_are_typed_values_strings_are_not_coerced(options, match):
    """Templated Airflow strings are converted by the operators, not here: a string is an input error."""
    with pytest.raises(InputError, match=match):
        AscendBackend(**options)


def test_options_record_is_shared_and_with_device_keeps_the_environment(fake):
    options = AscendOptions(cann_env=str(SET_ENV), device=0, soc_version="Ascend310P3", infer_timeout=60)
    backend = AscendBackend(options, idle_wait_s=0)
    assert backend.options.infer_timeout == 60 and backend.options.idle_wait_s == 0 and options.idle_wait_s == 300
    env = backend.env
    other = backend.with_device(1)
    assert (other.device, other.env, other.runner, other.options.infer_timeout) == (1, env, backend.runner, 60)
    assert backend.device == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.device = 2  # type: ignore[misc]


def test_options_reach_atc_and_the_cache_key(fake, tmp_path):
    aipp = tmp_path / "aipp.cfg"
    aipp.write_text("aipp_op { aipp_mode: static }\n")
    backend = fake.backend(
        precision_mode="allow_mix_precision",
        op_select_implmode="high_performance",
        insert_op_conf=str(aipp),
        output_type="fp16",
        device=0,
    )
    backend.compile(fake.model, 1, tmp_path / "out")
    argv = fake.calls("atc")[0]["argv"]
    assert argv[8:] == [
        "--precision_mode=allow_mix_precision",
        "--op_select_implmode=high_performance",
        f"--insert_op_conf={aipp}",
        "--output_type=FP16",
    ]
    key = backend.options_key()
    assert key["soc_version"] == "Ascend310P3" and key["cann_version"] == "0.0.0-double"
    assert key != fake.backend().options_key()
    aipp.write_text("aipp_op { aipp_mode: dynamic }\n")
    assert fake.backend(insert_op_conf=str(aipp)).options_key()["insert_op_conf_sha256"] != key["insert_op_conf_sha256"]


def test_dynamic_batch_compiles_once_shape_and_runs_with_dymbatch(fake, tmp_path):
    backend, om = compiled(fake, tmp_path, 4, dynamic_batch_size=[1, 2, 4, 8])
    argv = fake.calls("atc")[0]["argv"]
    assert "--input_shape=input:-1,3,224,224" in argv and "--dynamic_batch_size=1,2,4,8" in argv
    result = backend.infer(om, fake.inputs, 4, tmp_path / "result", "dyn", "TXT")
    assert result.num_outputs == 6
    assert fake.calls("ais_bench")[0]["argv"][-2:] == ["--dymBatch", "4"]
    with pytest.raises(InputError, match="batch size 3 is not one of dynamic_batch_size=1,2,4,8"):
        backend.perf(om, 3)


# ---- end to end on the doubles -----------------------------------------------------------------------------


def expected_scores(path: Path) -> np.ndarray:
    """The ais_bench double's model, written out independently: means of 1000 slices of the image."""
    image = np.fromfile(path, dtype=np.float32)
    return image[:150000].reshape(1000, -1).mean(axis=1)


def test_compile_infer_perf_end_to_end(fake, tmp_path):
    backend = get_backend("ascend", cann_env=str(SET_ENV), idle_wait_s=0)
    inputs = sorted(fake.inputs.glob("*.bin"))
    assert len(inputs) == 6 and all(p.stat().st_size == 602_112 for p in inputs)
    outputs = {}
    for bs in (1, 4):
        compiled_ = backend.compile(fake.model, bs, tmp_path / "compiled")
        result = backend.infer(
            Path(compiled_.artifact), fake.inputs, bs, tmp_path / "result", f"alt_gvt_large_bs{bs}", "TXT"
        )
        files = sorted(Path(result.output_dir).glob("*.txt"))
        assert result.num_inputs == result.num_outputs == len(files) == 6  # padding outputs not written
        assert [f.name for f in files] == [f"{p.stem}_0.txt" for p in inputs]
        outputs[bs] = {f.name: read_output(f, 1000) for f in files}
        perf = backend.perf(Path(compiled_.artifact), bs, loop=20)
        assert perf.batch_size == bs and perf.throughput > 0 and perf.device == "Ascend310P3:0"
    for path in inputs:
        name = f"{path.stem}_0.txt"
        # Each output belongs to its own input, whatever the batching: TXT keeps 6 decimals.
        np.testing.assert_allclose(outputs[4][name], expected_scores(path), atol=1e-6)
        np.testing.assert_array_equal(outputs[1][name], outputs[4][name])
    txt = (tmp_path / "result" / "alt_gvt_large_bs1" / f"{inputs[0].stem}_0.txt").read_text()
    assert txt.endswith(" \n") and txt.count("\n") == 1 and "  " not in txt


def test_doubles_are_executable_python_scripts():
    for tool in ("atc", "npu-smi"):
        path = SET_ENV.parent / "bin" / tool
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
        assert path.stat().st_mode & stat.S_IXUSR


def test_npu_smi_runs_through_the_tool_runner(fake, monkeypatch, tmp_path):
    """The idle wait polls npu-smi through the runner, so the Airflow hook's on_kill can stop it."""
    seen: list[list[str]] = []

    def runner(argv, **kwargs):
        seen.append(list(argv))
        return run_tool(argv, **kwargs)

    sequence = tmp_path / "aicore.txt"
    sequence.write_text("80\n3\n")
    monkeypatch.setenv("FAKE_NPU_AICORE_FILE", str(sequence))
    backend, om = compiled(fake, tmp_path, 1, runner=runner, idle_wait_s=30)
    backend.perf(om, 1, loop=2)
    polls = [argv for argv in seen if Path(argv[0]).name == "npu-smi"]
    assert len(polls) >= 2 and all(argv[1:] == ["info"] for argv in polls)
    assert backend.list_chips() == [0]
