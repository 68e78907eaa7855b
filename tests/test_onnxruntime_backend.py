"""The ONNX Runtime backend for real on a tiny ONNX model: compile, infer (ais_bench layout), perf, CLI."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend
from twins_tasks.constants import BIN_BYTES
from twins_tasks.errors import InputError
from twins_tasks.layout import read_output
from twins_tasks.perf import parse_summary

SHAPE = (3, 224, 224)


def _export(module, path: Path, input_name: str = "input", shape: tuple[int, ...] = (1, *SHAPE)) -> Path:
    import torch

    # The recipe's TorchScript exporter is deprecated upstream; its warnings are not this test's subject.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            (torch.randn(*shape),),
            str(path),
            input_names=[input_name],
            output_names=["output"],
            dynamic_axes={input_name: {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def _tiny_net():
    import torch

    class TinyNet(torch.nn.Module):
        """Conv -> pool -> linear to 1000 classes: the Twins model's interface at a tiny cost."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, kernel_size=16, stride=16)
            self.fc = torch.nn.Linear(8, 1000)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny classifier exported like the recipe: input `input`, dynamic batch."""
    return _export(_tiny_net(), tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(threads=1)


@pytest.fixture(scope="session")
def artifact_bs4(tiny_onnx: Path, backend: OnnxRuntimeBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(backend.compile(tiny_onnx, 4, tmp_path_factory.mktemp("compiled")).artifact)


def _write_inputs(folder: Path, n: int, *, seed: int = 1) -> dict[str, np.ndarray]:
    """``n`` random images as raw float32 .bin files named img1..imgN (natural order matters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(1, n + 1):
        image = rng.standard_normal(SHAPE, dtype=np.float32)
        image.tofile(folder / f"img{i}.bin")
        images[f"img{i}"] = image
    return images


def _reference(model: Path, image: np.ndarray) -> np.ndarray:
    """The exported (dynamic-batch) model run directly on one image, without the backend."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": image[None]})[0][0]


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


# --------------------------------------------------------------------------------------------- compile


def test_compile_fixes_the_batch_of_input_and_output(
    tiny_onnx: Path, backend: OnnxRuntimeBackend, artifact_bs4: Path
) -> None:
    assert artifact_bs4.name == "tiny_bs4.onnx"
    saved = onnx.load(str(artifact_bs4))
    assert [i.name for i in saved.graph.input] == ["input"]
    assert _dims(saved.graph.input[0]) == [4, 3, 224, 224]
    assert _dims(saved.graph.output[0]) == [4, 1000]
    assert _dims(onnx.load(str(tiny_onnx)).graph.input[0])[0] == "batch"  # the source model is untouched
    assert not [p for p in artifact_bs4.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_compile_result_and_custom_name(tiny_onnx: Path, backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    result = backend.compile(tiny_onnx, 2, tmp_path, name="alt_gvt_large_bs2")
    assert result.artifact == str(tmp_path / "alt_gvt_large_bs2.onnx")
    assert result.batch_size == 2 and result.backend == "onnxruntime" and result.compile_seconds > 0
    session = ort.InferenceSession(result.artifact, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 224, 224]
    assert session.get_outputs()[0].shape == [2, 1000]


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True])
def test_compile_rejects_bad_batch_sizes(
    tiny_onnx: Path, backend: OnnxRuntimeBackend, tmp_path: Path, batch_size
) -> None:
    with pytest.raises(InputError, match="batch size must be an integer >= 1"):
        backend.compile(tiny_onnx, batch_size, tmp_path)


def test_compile_rejects_wrong_input_name_and_shape(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    named = _export(_tiny_net(), tmp_path / "named.onnx", input_name="image")
    with pytest.raises(InputError, match=r"inputs \['image'\]; expected one input named 'input'"):
        backend.compile(named, 1, tmp_path)
    small = _export(_tiny_net(), tmp_path / "small.onnx", shape=(1, 3, 112, 112))
    with pytest.raises(InputError, match=r"small\.onnx input 'input' has shape \['batch', 3, 112, 112\]"):
        backend.compile(small, 1, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        backend.compile(tmp_path / "absent.onnx", 1, tmp_path)
    assert not list(tmp_path.glob("*_bs1.onnx"))


# ----------------------------------------------------------------------------------------------- infer


@pytest.mark.parametrize("outfmt", ["TXT", "NPY", "bin"])
def test_infer_writes_one_output_per_input_matching_the_model(
    tiny_onnx: Path, backend: OnnxRuntimeBackend, artifact_bs4: Path, tmp_path: Path, outfmt: str
) -> None:
    images = _write_inputs(tmp_path / "bins", 10)
    result = backend.infer(artifact_bs4, tmp_path / "bins", 4, tmp_path / "result", "tiny_bs4", outfmt=outfmt)

    out_dir = tmp_path / "result" / "tiny_bs4"
    suffix = outfmt.lower()
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"img{i}_0.{suffix}" for i in range(1, 11))
    assert (result.num_inputs, result.num_outputs, result.batch_size) == (10, 10, 4)
    assert result.output_dir == str(out_dir) and result.throughput > 0
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for stem, image in images.items():
        expected = session.run(None, {"input": image[None]})[0][0]
        got = read_output(out_dir / f"{stem}_0.{suffix}", 1000)
        # TXT keeps 6 decimals; binary formats differ only by batched-vs-single float rounding
        np.testing.assert_allclose(got, expected, atol=2e-6 if suffix == "txt" else 1e-5, rtol=1e-5)
    if suffix == "npy":
        assert np.load(out_dir / "img1_0.npy").shape == (1, 1000)

    summary = json.loads((tmp_path / "result" / "tiny_bs4_summary.json").read_text())
    assert summary == result.summary
    assert summary["NPU_compute_time"]["count"] == 3 == len(summary["npu_compute_time_list"])
    stats = summary["NPU_compute_time"]
    assert stats["min"] <= stats["median"] <= stats["max"] and stats["min"] <= stats["mean"] <= stats["max"]
    assert set(stats) == {"min", "max", "mean", "median", "percentile(99%)", "count"}
    assert summary["throughput"] == pytest.approx(4000.0 / stats["mean"])
    assert summary["H2D_latency"]["count"] == summary["D2H_latency"]["count"] == 3
    # the padded last batch lists its 2 real inputs only
    assert summary["filesinfo"]["2"]["infiles"] == [
        [str(tmp_path / "bins" / "img9.bin"), str(tmp_path / "bins" / "img10.bin")]
    ]
    assert summary["args"]["outfmt"] == outfmt.upper() and summary["args"]["batchsize"] == 4


def test_infer_pads_with_copies_without_disturbing_real_rows(
    backend: OnnxRuntimeBackend, tiny_onnx: Path, tmp_path: Path
) -> None:
    # batch 8 with one input: 7 padding rows, none written, the real row still equals the direct run
    artifact = Path(backend.compile(tiny_onnx, 8, tmp_path / "art").artifact)
    images = _write_inputs(tmp_path / "bins", 1)
    result = backend.infer(artifact, tmp_path / "bins", 8, tmp_path / "out", "bs8", outfmt="BIN")
    assert [p.name for p in (tmp_path / "out" / "bs8").iterdir()] == ["img1_0.bin"]
    assert result.num_outputs == 1 and result.summary["NPU_compute_time"]["count"] == 1
    np.testing.assert_allclose(
        read_output(tmp_path / "out" / "bs8" / "img1_0.bin", 1000),
        _reference(tiny_onnx, images["img1"]),
        atol=1e-5,
        rtol=1e-5,
    )


def test_infer_reads_npy_inputs(
    backend: OnnxRuntimeBackend, tiny_onnx: Path, artifact_bs4: Path, tmp_path: Path
) -> None:
    image = np.random.default_rng(5).standard_normal(SHAPE, dtype=np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "pic.npy", image)
    backend.infer(artifact_bs4, tmp_path / "in", 4, tmp_path / "out", "npy_in", outfmt="TXT")
    np.testing.assert_allclose(
        read_output(tmp_path / "out" / "npy_in" / "pic_0.txt", 1000), _reference(tiny_onnx, image), atol=2e-6, rtol=1e-5
    )


def test_infer_names_an_input_of_the_wrong_size(
    backend: OnnxRuntimeBackend, artifact_bs4: Path, tmp_path: Path
) -> None:
    _write_inputs(tmp_path / "bins", 3)
    (tmp_path / "bins" / "img2.bin").write_bytes(b"\0" * (BIN_BYTES - 4))
    with pytest.raises(InputError, match=rf"img2\.bin is {BIN_BYTES - 4} bytes, expected {BIN_BYTES}"):
        backend.infer(artifact_bs4, tmp_path / "bins", 4, tmp_path / "out", "x")
    assert not (tmp_path / "out" / "x").exists()  # checked before any output is written

    np.save(tmp_path / "bins" / "img2.npy", np.zeros((3, 224, 223), np.float32))
    (tmp_path / "bins" / "img2.bin").unlink()
    with pytest.raises(InputError, match=r"img2\.npy holds 149856 values, expected 150528"):
        backend.infer(artifact_bs4, tmp_path / "bins", 4, tmp_path / "out", "x")


def test_infer_rejects_a_batch_size_other_than_the_artifacts(
    backend: OnnxRuntimeBackend, artifact_bs4: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    _write_inputs(tmp_path / "bins", 2)
    with pytest.raises(InputError, match=r"compiled for batch size 4, not 2: pass --batchsize 4"):
        backend.infer(artifact_bs4, tmp_path / "bins", 2, tmp_path / "out", "x")
    with pytest.raises(InputError, match="dynamic batch dimension"):  # the uncompiled model
        backend.infer(tiny_onnx, tmp_path / "bins", 2, tmp_path / "out", "x")


def test_infer_rejects_bad_outfmt_and_missing_artifact(
    backend: OnnxRuntimeBackend, artifact_bs4: Path, tmp_path: Path
) -> None:
    _write_inputs(tmp_path / "bins", 1)
    with pytest.raises(InputError, match="--outfmt 'CSV' is not one of BIN, NPY, TXT"):
        backend.infer(artifact_bs4, tmp_path / "bins", 4, tmp_path / "out", "x", outfmt="CSV")
    with pytest.raises(InputError, match=r"artifact .*missing\.onnx does not exist"):
        backend.infer(tmp_path / "missing.onnx", tmp_path / "bins", 4, tmp_path / "out", "x")


# ------------------------------------------------------------------------------------------------ perf


def test_perf_stats_are_consistent_and_parse_back(backend: OnnxRuntimeBackend, artifact_bs4: Path) -> None:
    result = backend.perf(artifact_bs4, 4, loop=5, warmup=1)
    assert result.loop == 5 and result.batch_size == 4 and result.backend == "onnxruntime"
    assert result.device.startswith("CPUExecutionProvider ")
    assert 0 < result.min_ms <= result.median_ms <= result.max_ms
    assert result.min_ms <= result.mean_ms <= result.max_ms and result.p99_ms <= result.max_ms
    assert result.throughput == pytest.approx(4000.0 / result.mean_ms)
    parsed = parse_summary("\n".join(result.summary_lines()), loop=5, backend=result.backend, device=result.device)
    assert parsed == result


def test_perf_checks_batch_and_loop(backend: OnnxRuntimeBackend, artifact_bs4: Path) -> None:
    with pytest.raises(InputError, match="compiled for batch size 4, not 1"):
        backend.perf(artifact_bs4, 1)
    with pytest.raises(InputError, match="--loop must be an integer >= 1"):
        backend.perf(artifact_bs4, 4, loop=0)


# ------------------------------------------------------------------------------------ options, providers


def test_default_providers_end_with_cpu_and_unknown_ones_are_named() -> None:
    default = OnnxRuntimeBackend()
    assert default.providers[-1] == "CPUExecutionProvider"
    assert set(default.providers) <= set(ort.get_available_providers())
    explicit = OnnxRuntimeBackend(providers=["CPUExecutionProvider"], threads=2)
    assert explicit.providers == ["CPUExecutionProvider"] and explicit.threads == 2
    with pytest.raises(
        InputError,
        match=r"NoSuchExecutionProvider not available .*choose from .*"
        r"CPUExecutionProvider",
    ):
        OnnxRuntimeBackend(providers=["NoSuchExecutionProvider"])
    with pytest.raises(InputError, match="--threads must be an integer >= 1"):
        OnnxRuntimeBackend(threads=0)


def test_options_key_and_describe(backend: OnnxRuntimeBackend) -> None:
    key = backend.options_key()
    assert key["onnxruntime"] == ort.__version__ and key["providers"] == ["CPUExecutionProvider"]
    assert key["graph_optimization_level"] == "ORT_ENABLE_EXTENDED"
    assert "threads" not in key  # threads do not change the artifact: no needless recompiles
    info = backend.describe()
    assert info["threads"] == 1 and info["onnxruntime"] == ort.__version__
    assert info["device"].startswith("CPUExecutionProvider ") and info["cpu_count"] >= 1


# ------------------------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from twins_tasks.cli import inference

    parser = argparse.ArgumentParser(prog="twins")
    inference.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_compile_and_infer(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _cli(
            [
                "compile",
                "--backend",
                "onnxruntime",
                "--model",
                str(tiny_onnx),
                "--batchsize",
                "4",
                "--output",
                str(tmp_path / "om"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    artifact = tmp_path / "om" / "tiny_bs4.onnx"
    assert out[0].startswith(f"{artifact}  (batch size 4, compiled by onnxruntime in ")
    assert json.loads(out[-1])["artifact"] == str(artifact)

    _write_inputs(tmp_path / "bins", 5)
    assert (
        _cli(
            [
                "infer",
                "--backend",
                "onnxruntime",
                "--model",
                str(artifact),
                "--input",
                str(tmp_path / "bins"),
                "--batchsize",
                "4",
                "--output",
                str(tmp_path / "result"),
                "--output_dirname",
                "tiny_bs4",
                "--outfmt",
                "txt",
                "--json",
                str(tmp_path / "infer.json"),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith(f"5 inputs -> 5 outputs in {tmp_path / 'result' / 'tiny_bs4'} (TXT)")
    assert len(list((tmp_path / "result" / "tiny_bs4").glob("img*_0.txt"))) == 5
    assert json.loads((tmp_path / "infer.json").read_text())["num_outputs"] == 5


def test_cli_infer_argument_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _cli(
            [
                "infer",
                "--backend",
                "onnxruntime",
                "--model",
                "m.onnx",
                "--input",
                "bins",
                "--batchsize",
                "1",
                "--output_dirname",
                "x",
            ]
        )
    assert exc.value.code == 2
    assert "--output_dirname requires --output" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _cli(["infer", "--model", "m.onnx", "--input", "bins", "--batchsize", "1", "--output", "o", "--outfmt", "csv"])
    assert exc.value.code == 2
