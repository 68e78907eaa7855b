"""CLI argument checks that fail before any work: batch-size range, output paths of the wrong kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from twins_tasks.cli import arguments, main


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Any backend use means the check came too late."""

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(arguments, "get_backend", refuse)


@pytest.mark.parametrize("command", ["compile", "infer", "perf"])
@pytest.mark.parametrize(
    "value, says",
    [
        ("100000", "100000 is out of range: use 1 to 256"),
        ("0", "0 is out of range"),
        ("four", "'four' is not an integer"),
    ],
)
def test_batchsize_takes_the_dag_range(command, value, says, capsys):
    argv = {
        "compile": ["compile", "--model", "m.onnx", "--output", "o", "--batchsize", value],
        "infer": ["infer", "--model", "m.onnx", "--input", "b", "--output", "o", "--batchsize", value],
        "perf": ["perf", "--model", "m.onnx", "--batchsize", value],
    }[command]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"argument --batchsize: {says}" in capsys.readouterr().err


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize(
    "argv, says",
    [
        (["compile", "--model", "m.onnx", "--batchsize", "4", "--output", "{file}"], "--output {file} is a file"),
        (
            ["compile", "--model", "m.onnx", "--batchsize", "4", "--output", "{dir}/o", "--json", "{dir}"],
            "--json {dir} is an existing folder",
        ),
        (
            ["infer", "--model", "m", "--input", "b", "--batchsize", "4", "--output", "{file}"],
            "--output/--output_dirname {file}/",
        ),
        (
            [
                "infer",
                "--model",
                "m",
                "--input",
                "b",
                "--batchsize",
                "4",
                "--output",
                "{dir}",
                "--output_dirname",
                "a-file",
            ],
            "--output/--output_dirname {dir}/a-file is a file",
        ),
        (
            ["infer", "--model", "m", "--input", "b", "--batchsize", "4", "--output", "{dir}", "--json", "{dir}"],
            "--json {dir} is an existing folder",
        ),
        (["perf", "--model", "m", "--batchsize", "4", "--json", "{dir}"], "--json {dir} is an existing folder"),
        (
            ["perf", "--model", "m", "--batchsize", "4", "--json", "{file}/x.json"],
            "--json {file}/x.json: {file} is a file",
        ),
        (["postprocess", "--pred", "p", "--input_path", "v", "--json", "{dir}"], "--json {dir} is an existing folder"),
        (["pth2onnx", "--random-init", "--output", "{dir}"], "--output {dir} is an existing folder"),
        (
            ["reference", "--bin_path", "b", "--random-init", "--output", "{dir}"],
            "--output {dir} is an existing folder",
        ),
        (["compare", "--reference", "r.npz", "--pred", "p", "--json", "{dir}"], "--json {dir} is an existing folder"),
        (["make-sample", "--out", "{file}"], "--out {file} is a file"),
        (["preprocess", "--root_path", "v", "--bin_path", "{file}"], "--bin_path {file} is a file"),
    ],
)
def test_output_paths_of_the_wrong_kind_fail_before_any_work(argv, says, tmp_path, capsys):
    file = _file(tmp_path)
    fill = {"file": str(file), "dir": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2  # bad input: exit code 2
    assert says.format(**fill) in capsys.readouterr().err
