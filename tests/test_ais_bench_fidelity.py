"""Contract tests: where the real ais_bench differs from the obvious reading, we and the doubles follow it.

Each fact is read from the real frontend (Ascend/tools @9d6da90, ``ais-bench_workload/tool/ais_bench/
ais_bench/infer/``); the ais_bench double's docstring cites file and line for each one. Issue 11, items 1-6.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.doubles.helpers import FAKE_VARS, SET_ENV, make_inputs, make_model, read_log
from twins_tasks.backends.ascend import AscendBackend
from twins_tasks.errors import InputError
from twins_tasks.layout import read_output
from twins_tasks.perf import parse_summary
from twins_tasks.postprocess import score
from twins_tasks.toolrun import run_tool


@pytest.fixture
def env(monkeypatch, tmp_path):
    for var in FAKE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWINS_DOUBLES_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_NPU_LOCK_DIR", str(tmp_path / "npu-locks"))
    return tmp_path


def backend(**options) -> AscendBackend:
    return AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_wait_s=0, **options)


def compiled(tmp_path: Path, bs: int, **options) -> tuple[AscendBackend, Path]:
    b = backend(**options)
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = make_model(tmp_path / "alt_gvt_large.onnx")
    return b, Path(b.compile(model, bs, tmp_path / "compiled").artifact)


def ais_bench(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """The double, run the way the backend runs the real tool."""
    full_env = {**os.environ, "PYTHONPATH": str(SET_ENV.parent), **env}
    return subprocess.run(
        [sys.executable, "-m", "ais_bench", *argv], capture_output=True, text=True, env=full_env, timeout=120
    )


def write_manifest(folder: Path, labels: dict[str, int]) -> None:
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["stem", "source", "label", "wnid", "status", "reason"])
        for stem, label in labels.items():
            writer.writerow([stem, f"{stem}.JPEG", label, f"n{label:08d}", "ok", ""])


# ---- 1. float16 outputs with output_type FP16 ----------------------------------------------------------------


@pytest.mark.parametrize("outfmt", ["BIN", "NPY"])
def test_fp16_outputs_are_float16_files_and_postprocess_scores_them(env, outfmt):
    inputs = env / "bin_path"
    make_inputs(inputs, 6)
    fp32, om32 = compiled(env / "fp32", 4)
    fp16, om16 = compiled(env / "fp16", 4, output_type="FP16")
    assert "--output_type=FP16" in fp16.atc_command(Path("m.onnx"), "out", 4)
    r32 = fp32.infer(om32, inputs, 4, env / "result", "fp32", outfmt)
    r16 = fp16.infer(om16, inputs, 4, env / "result", "fp16", outfmt)
    name = f"ILSVRC2012_val_00000001_0.{outfmt.lower()}"
    if outfmt == "BIN":
        assert (Path(r16.output_dir) / name).stat().st_size == 2000  # 1000 float16: half the float32 file
        assert (Path(r32.output_dir) / name).stat().st_size == 4000
    else:
        saved = np.load(Path(r16.output_dir) / name)
        assert saved.dtype == np.float16 and saved.shape == (1, 1000)
    # Labels = the float32 run's top-1: the float16 run must score 100% too (not 0% for "unreadable").
    labels = {
        path.stem: int(read_output(Path(r32.output_dir) / f"{path.stem}_0.{outfmt.lower()}", 1000).argmax())
        for path in sorted(inputs.glob("*.bin"))
    }
    write_manifest(inputs, labels)
    result = score(r16.output_dir, inputs)
    assert (result.n_scored, result.top1, result.unreadable) == (6, 100.0, [])
    np.testing.assert_allclose(
        read_output(Path(r16.output_dir) / name, 1000), read_output(Path(r32.output_dir) / name, 1000), atol=1e-3
    )


def test_fp16_bin_outputs_compare_with_the_pytorch_reference(env):
    """`twins compare` reads float16 BIN outputs too (agreement with PyTorch is the meaningful number)."""
    from twins_tasks.reference import compare_with_reference

    inputs = env / "bin_path"
    make_inputs(inputs, 4)
    fp16, om16 = compiled(env / "fp16", 1, output_type="FP16")
    result = fp16.infer(om16, inputs, 1, env / "result", "fp16", "BIN")
    stems = [p.stem for p in sorted(inputs.glob("*.bin"))]
    logits = np.stack([np.fromfile(inputs / f"{s}.bin", np.float32)[:150000].reshape(1000, -1).mean(1) for s in stems])
    reference = env / "ref.npz"
    np.savez(reference, stems=np.array(stems), logits=logits.astype(np.float32), meta=np.array(json.dumps({})))
    record = compare_with_reference(reference, result.output_dir)
    assert record["num_compared"] == 4 and record["num_invalid"] == 0
    assert record["top1_agreement"] == 1.0 and record["max_abs_diff"] < 1e-3  # float16 rounding only


# ---- 2. output names stop at the first dot --------------------------------------------------------------------


def test_the_real_naming_makes_inner_dot_stems_collide(env):
    """The fact itself, on the double: img.v1.bin and img.v2.bin both write img_0.txt."""
    inputs = env / "in"
    make_inputs(inputs, 2, prefix="img.v")
    _, om = compiled(env, 1)
    proc = ais_bench("--model", str(om), "--input", str(inputs), "--output", str(env / "o"), "--output_dirname", "d")
    assert proc.returncode == 0, proc.stdout
    assert sorted(p.name for p in (env / "o" / "d").iterdir()) == ["img_0.bin"]


def test_infer_refuses_inputs_whose_outputs_would_collide(env):
    inputs = env / "in"
    make_inputs(inputs, 3, prefix="img.v")
    b, om = compiled(env, 1)
    with pytest.raises(InputError) as err:
        b.infer(om, inputs, 1, env / "result", "bs1", "TXT")
    message = str(err.value)
    assert "img.v00000001.bin, img.v00000002.bin, img.v00000003.bin -> img_0.*" in message
    assert "ais_bench names outputs after the file name up to its first dot" in message
    assert read_log(env / "calls.jsonl", "ais_bench") == []  # refused before running


def test_an_inner_dot_without_collision_is_found_under_its_real_name(env):
    inputs = env / "in"
    make_inputs(inputs, 2, prefix="pic")
    (inputs / "pic00000001.bin").rename(inputs / "pic00000001.crop.bin")
    b, om = compiled(env, 1)
    result = b.infer(om, inputs, 1, env / "result", "bs1", "TXT")
    assert sorted(p.name for p in Path(result.output_dir).iterdir()) == ["pic00000001_0.txt", "pic00000002_0.txt"]


# ---- 3. a comma list of folders is one folder per model input ---------------------------------------------------


def test_comma_separated_folders_are_an_input_error_in_both(env):
    for folder in ("d1", "d2"):
        make_inputs(env / folder, 2)
    b, om = compiled(env, 1)
    with pytest.raises(InputError, match="one folder per model input, and this model has one input"):
        b.infer(om, f"{env / 'd1'},{env / 'd2'}", 1, env / "result", "bs1", "TXT")
    assert read_log(env / "calls.jsonl", "ais_bench") == []
    proc = ais_bench("--model", str(om), "--input", f"{env / 'd1'},{env / 'd2'}")
    assert proc.returncode == 1
    assert "[ERROR] Invalid args. args input dir num:2 not equal to model inputs num:1" in proc.stdout


def test_comma_separated_files_are_the_one_inputs_files(env):
    files = make_inputs(env / "in", 3)
    b, om = compiled(env, 2)
    result = b.infer(om, ",".join(str(p) for p in files[:2]), 2, env / "result", "two", "TXT")
    assert result.num_outputs == 2


def test_twins_infer_help_says_one_folder():
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}  # this checkout's CLI, whatever the venv has installed
    proc = subprocess.run(
        [sys.executable, "-m", "twins_tasks.cli", "infer", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    text = " ".join(proc.stdout.split())
    assert "one folder of .bin/.npy inputs" in text and "folder(s)" not in text


# ---- 4. exactly .bin .BIN .npy .NPY -----------------------------------------------------------------------------


def test_odd_case_suffixes_are_not_inputs_for_either(env):
    inputs = env / "in"
    files = make_inputs(inputs, 3)
    files[2].rename(inputs / "odd.Bin")
    b, om = compiled(env, 1)
    result = b.infer(om, inputs, 1, env / "result", "bs1", "TXT")  # no output expected for odd.Bin
    assert result.num_inputs == 2
    assert sorted(p.name for p in Path(result.output_dir).iterdir()) == [f"{p.stem}_0.txt" for p in files[:2]]


# ---- 5. exit codes, arguments, printed lines --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, code, says",
    [
        (["--loop", "0"], 2, "0 is an invalid positive int value"),
        (["--debug"], 2, "--debug: expected one argument"),
        (["--display_all_summary"], 2, "--display_all_summary: expected one argument"),
        (["--outfmt", "txt"], 2, "invalid choice: 'txt'"),
        (["--output_dirname", "x"], 1, "[ERROR] parameter --output_dirname cann't be used alone"),
        (["--input", "/nonexistent/in"], 1, "[ERROR] Invalid args. /nonexistent/in  of --input is invalid"),
    ],
)
def test_the_double_exits_like_the_real_tool(env, argv, code, says):
    _, om = compiled(env, 1)
    proc = ais_bench("--model", str(om), *argv)
    assert proc.returncode == code
    assert says in proc.stdout + proc.stderr


def test_batchsize_defaults_to_the_models_own(env):
    _, om = compiled(env, 4)
    proc = ais_bench("--model", str(om), "--loop", "2")
    assert proc.returncode == 0
    assert "[INFO] try get model batchsize:4" in proc.stdout
    assert parse_summary(proc.stdout, loop=2).batch_size == 4


def test_device_list_runs_one_process_per_device(env):
    inputs = env / "in"
    files = make_inputs(inputs, 5)
    _, om = compiled(env, 1)
    proc = ais_bench(
        "--model", str(om), "--input", str(inputs), "--output", str(env / "o"), "--output_dirname", "d",
        "--device", "0,1", TWINS_FAKE_NPUS="2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pids = {(e["device"], e["pid"]) for e in read_log(env / "calls.jsonl", "events") if e["event"] == "holds"}
    assert {device for device, _ in pids} == {0, 1} and len({pid for _, pid in pids}) == 2
    written = sorted(p.relative_to(env / "o" / "d").as_posix() for p in (env / "o" / "d").rglob("*_0.bin"))
    assert written == [f"device0/{p.stem}_0.bin" for p in files[:3]] + [f"device1/{p.stem}_0.bin" for p in files[3:]]


def test_tool_output_with_a_progress_bar_streams_as_lines(env, caplog):
    """The real tool prints tqdm on stdout ('\\r' redraws); the runner logs whole lines and parses the summary."""
    inputs = env / "in"
    make_inputs(inputs, 3)
    _, om = compiled(env, 1)
    argv = [sys.executable, "-m", "ais_bench", "--model", str(om), "--input", str(inputs), "--batchsize", "1"]
    result = run_tool(argv, env={**os.environ, "PYTHONPATH": str(SET_ENV.parent), "FAKE_AIS_FORMAT": "new"})
    assert result.exit_code == 0
    bars = [line for line in result.lines if line.startswith("Inference array Processing:")]
    assert bars and bars[-1].startswith("Inference array Processing: 100%|") and "3/3" in bars[-1]
    assert not any("\r" in line for line in result.lines)
    perf = parse_summary(result.text, loop=1)
    assert perf.batch_size == 1 and perf.throughput == pytest.approx(1000 / perf.mean_ms)
    assert "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(" in result.text


def test_progress_redraws_are_thinned_in_the_log():
    from twins_tasks.toolrun import _split_output

    chunks = iter([b"a\n\rbar 1/3", b"\rbar 2/3\rbar 3/3\r", b"\nlast line\r\n", b"tail"])
    got = list(_split_output(lambda n: next(chunks, b"")))
    assert got == [
        ("a", False),
        ("", True),
        ("bar 1/3", True),
        ("bar 2/3", True),
        ("bar 3/3", False),  # the final redraw ends with '\n': a line
        ("last line", False),
        ("tail", False),
    ]


# ---- 6. summary JSON, pure_infer_data, padding ------------------------------------------------------------------


def test_perf_with_output_writes_pure_infer_data_and_a_summary(env):
    _, om = compiled(env, 2)
    proc = ais_bench("--model", str(om), "--loop", "3", "--output", str(env / "o"), "--output_dirname", "p")
    assert proc.returncode == 0
    assert [p.name for p in (env / "o" / "p").iterdir()] == ["pure_infer_data_0.bin"]
    summary = json.loads((env / "o" / "p_summary.json").read_text())
    assert summary["NPU_compute_time"]["count"] == 3 and summary["pid"] > 0
    assert summary["args"][1:] == [
        "--model",
        str(om),
        "--loop",
        "3",
        "--output",
        str(env / "o"),
        "--output_dirname",
        "p",
    ]
    assert summary["filesinfo"] == {
        "0": {"infiles": ["pure_infer_data"], "outfiles": [str(env / "o" / "p" / "pure_infer_data_0.bin")]}
    }


def test_the_short_last_batch_is_padded_with_its_first_file(env):
    inputs = env / "in"
    files = make_inputs(inputs, 6)
    b, om = compiled(env, 4)
    result = b.infer(om, inputs, 4, env / "result", "bs4", "TXT")
    batches = [e["files"] for e in read_log(env / "calls.jsonl", "events") if e["event"] == "batch"]
    assert batches == [[str(p) for p in files[:4]], [str(files[4]), str(files[5]), str(files[4]), str(files[4])]]
    assert result.num_outputs == 6 and len(list(Path(result.output_dir).iterdir())) == 6


def test_a_float_batchsize_mean_parses():
    """summary.py prints the mean of the batch sizes it ran when it recorded them (dynamic shapes): 64.0."""
    text = (
        "[INFO] NPU_compute_time (ms): min = 1.5, max = 2.5, mean = 2.0, median = 2.0, percentile(99%) = 2.49\n"
        "[INFO] throughput 1000*batchsize.mean(64.0)/NPU_compute_time.mean(2.0): 32000.0\n"
    )
    perf = parse_summary(text, loop=2)
    assert (perf.batch_size, perf.throughput) == (64, 32000.0)
