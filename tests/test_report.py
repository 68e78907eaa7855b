"""The recipe's table, baselines, and the regression comparison."""

from __future__ import annotations

import pytest

from twins_tasks.baseline import BASELINE_PRESETS, parse_baseline_numbers
from twins_tasks.errors import InputError
from twins_tasks.report import best_batch_size, perf_table, render


def test_perf_table_with_baseline_and_ratio():
    table = perf_table(
        {1: 9.5, 4: 10.5, 8: 10.6},
        label="onnxruntime",
        baseline={1: 62.0, 4: 77.0, 8: 79.5},
        baseline_label="recipe-gpu",
    )
    lines = table.splitlines()
    assert lines[0] == "| throughput (img/s) | bs1 | bs4 | bs8 |"
    assert lines[2] == "| onnxruntime | 9.5 | 10.5 | 10.6 |"
    assert lines[3] == "| recipe-gpu | 62.0 | 77.0 | 79.5 |"
    assert lines[4] == "| onnxruntime / recipe-gpu | 0.15 | 0.14 | 0.13 |"
    assert table.endswith("Best batch size: **8** (10.6 img/s)")


def test_perf_table_without_baseline_has_no_ratio_row():
    table = perf_table({4: 2.0}, label="x")
    assert "baseline" not in table and " / " not in table and len(table.splitlines()) == 5


def test_baseline_forms():
    assert parse_baseline_numbers(None) is None
    assert parse_baseline_numbers("none") is None
    assert parse_baseline_numbers("recipe-310p") == BASELINE_PRESETS["recipe-310p"]
    assert parse_baseline_numbers({"1": 62, "4": "77.5"}) == {1: 62.0, 4: 77.5}
    assert parse_baseline_numbers('{"8": 79.5}') == {8: 79.5}
    assert parse_baseline_numbers("1:62,4:77") == {1: 62.0, 4: 77.0}
    assert parse_baseline_numbers("manual__2026-11-01T02:00:00+00:00") is None  # a run id
    with pytest.raises(InputError, match="positive"):
        parse_baseline_numbers({"1": 0})
    with pytest.raises(InputError, match="batch sizes"):
        parse_baseline_numbers({"one": 1})


def test_best_batch_size_ignores_missing():
    assert best_batch_size({1: None, 4: 3.0, 8: 2.0}) == 4
    assert best_batch_size({1: None}) is None


def test_render_says_random_weights_and_generated_data():
    text = render(
        {
            "run_key": "r",
            "backend": "onnxruntime",
            "device": "CPU",
            "weights": "random-init seed=0",
            "random_init": True,
            "config": {"synthetic_data": True},
            "model_name": "twins_svt_large",
        },
        [
            {
                "batch_size": 1,
                "throughput": 5.0,
                "top1": 0.0,
                "top5": 3.1,
                "num_images": 32,
                "num_missing": 0,
                "agreement_top1": 100.0,
                "agreement_max_abs_diff": 4e-6,
            }
        ],
    )
    assert "random weights" in text and "generated images, not ImageNet" in text
    assert "| 1 | 0.0 | 3.1 | 32 | 0 | 100.0 | 4.00e-06 |" in text


def test_render_shows_skipped_images_failed_batch_sizes_and_perf_spread():
    from twins_tasks.preprocess.inputs import skipped_fields

    inputs = {"bad": [(f"/data/val/n01440764/img{i}.JPEG", "UnidentifiedImageError: x") for i in range(12)]}
    fields = skipped_fields(inputs)
    assert fields["num_skipped"] == 12 and fields["skipped_images"][0] == "n01440764/img0.JPEG"
    run = {"run_key": "r", "backend": "onnxruntime", "status": "partial", "failed_batch_sizes": {"8": "ToolError: x"}}
    batches = [
        {
            "batch_size": 1,
            "status": "ok",
            "throughput": 9.0,
            "perf_rounds": 5,
            "throughput_min": 8.5,
            "throughput_max": 9.4,
            "throughput_cv": 0.031,
            "top1": 1.0,
            "top5": 2.0,
            "num_images": 20,
            "num_missing": 0,
        },
        {"batch_size": 8, "status": "failed", "error": "ToolError: x"},
    ]
    text = render({**run, **fields}, batches)
    assert "- SKIPPED (--skip-bad): 12 undecodable image(s), not counted in the accuracy: n01440764/img0.JPEG, " in text
    assert "n01440764/img9.JPEG, ... and 2 more" in text
    assert "- FAILED batch sizes (run partial): bs8: ToolError: x" in text
    assert "| 1 | 5 | 9.0 | 8.5 | 9.4 | 3.1 |" in text
    assert "| 8 | FAILED | | | | | |" in text
    assert "SKIPPED" not in render(run, batches)


def test_results_command_lists_skips_and_failed_batch_sizes(tmp_path, capsys):
    from twins_tasks.cli import main
    from twins_tasks.store import ResultsStore

    url = f"sqlite:///{tmp_path / 'r.db'}"
    ResultsStore(url).record_run(
        {
            "run_key": "r1",
            "config_key": "c",
            "model_name": "m",
            "weights": "w",
            "random_init": True,
            "backend": "onnxruntime",
            "status": "partial",
            "num_skipped": 3,
            "skipped_images": ["a/1.JPEG", "a/2.JPEG", "b/3.JPEG"],
            "failed_batch_sizes": {"8": "boom"},
        },
        [{"batch_size": 1, "status": "ok", "throughput": 9.0, "top1": 1.0}, {"batch_size": 8, "status": "failed"}],
    )
    assert main(["results", "--url", url]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert (
        "partial/-" in line and "best bs 1 9.0 img/s" in line and "failed bs 8" in line and "3 image(s) skipped" in line
    )


def test_render_flags_position_labels():
    run = {"run_key": "r", "backend": "onnxruntime", "config": {"label_scheme": "folder-position"}}
    assert "- NOTE: labels are positions among the sorted class folders" in render(run, [])
    assert "labels are" not in render({**run, "config": {"label_scheme": "imagenet"}}, [])


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("1:5,1:7", "lists batch size 1 twice"),
        ('{"1": 5, "1": 7}', "lists batch size 1 twice"),
        ({"1": 5, 1: 7}, "lists batch size 1 twice"),
        ("0:5", "batch size 0 is out of range (use 1 to 256)"),
        ("257:5", "batch size 257 is out of range (use 1 to 256)"),
        ({"0": 5}, "batch size 0 is out of range (use 1 to 256)"),
        ("1:nan", "throughputs must be positive finite img/s numbers"),
        ("1:inf", "throughputs must be positive finite img/s numbers"),
        ('{"1": NaN}', "throughputs must be positive finite img/s numbers"),
        ({"1": float("nan")}, "throughputs must be positive finite img/s numbers"),
        ("1:-3", "throughputs must be positive finite img/s numbers"),
    ],
)
def test_baseline_numbers_refuse_repeats_out_of_range_and_non_finite(spec, problem):
    with pytest.raises(InputError) as refused:
        parse_baseline_numbers(spec)
    message = str(refused.value)
    assert message.startswith(f"baseline {spec!r}") and problem in message
    assert "each batch size once: '1:62,4:77'" in message  # what to write instead
