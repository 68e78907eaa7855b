"""The one recipe configuration shared by `twins run` and the DAG, and the one failure mapping of all tasks."""

from __future__ import annotations

import pytest

from twins_tasks.cli.arguments import recipe_from_args
from twins_tasks.errors import InputError, MissingOutputError, ToolError
from twins_tasks.recipe import BackendSettings, RecipeConfig
from twins_tasks.types import RetentionPolicy


def _dag_params(**extra):
    from airflow.dag_processing.dagbag import DagBag  # noqa: F401  (Airflow configured by conftest)

    params = {
        "dataset_path": "/data/val",
        "image_limit": None,
        "checkpoint_path": None,
        "random_init_seed": 0,
        "model_name": "twins_svt_large",
        "opset": 11,
        "backend": "onnxruntime",
        "soc_version": "auto",
        "device_ids": [0],
        "precision_mode": "recipe default",
        "batch_sizes": [1, 4],
        "perf_loops": 2,
        "reference_images": 3,
        "outfmt": "TXT",
        "baseline": None,
        "max_top1_drop": 0.5,
        "max_throughput_drop_pct": 5.0,
    }
    return {**params, **extra}


def _cli_args(*flags: str):
    from twins_tasks.cli import build_parser

    return build_parser().parse_args(["run", *flags])


def test_cli_flags_and_dag_params_of_the_same_setup_give_the_same_configuration():
    from_dag = RecipeConfig.from_params(_dag_params())
    from_cli = recipe_from_args(
        _cli_args(
            "--root_path",
            "/data/val",
            "--random-init",
            "--backend",
            "onnxruntime",
            "--batch-sizes",
            "1,4",
            "--loop",
            "2",
            "--reference-images",
            "3",
        )  # fmt: skip
    )
    assert from_cli == from_dag
    # "recipe default" (the form's wording) and no flag (the CLI) are the same setting: no --precision_mode.
    assert from_dag.backend.precision_mode is None and from_dag.key_options == from_cli.key_options
    assert RecipeConfig.from_dict(from_dag.to_dict()) == from_dag
    # The retention policy: the same defaults, and the same values from Params and flags.
    assert from_dag.retention == from_cli.retention == RetentionPolicy()
    retention = {"keep_runs": 1, "keep_failed_days": 2.5, "grace_hours": 6.0, "cache_budget_gib": None}
    flags = ("--keep-runs", "1", "--keep-failed-days", "2.5", "--grace-hours", "6", "--cache-budget-gib", "none")
    cli = recipe_from_args(_cli_args("--root_path", "/data/val", "--random-init", *flags))
    assert RecipeConfig.from_params(_dag_params(**retention)).retention == cli.retention == RetentionPolicy(**retention)
    # The accuracy scope: "all" by default from both, and the same choice from a Param and a flag.
    assert from_dag.accuracy_batch_sizes == from_cli.accuracy_batch_sizes == "all"
    scoped = recipe_from_args(
        _cli_args("--root_path", "/data/val", "--random-init", "--backend", "onnxruntime", "--batch-sizes", "1,4",
                  "--loop", "2", "--reference-images", "3", "--accuracy-batch-sizes", "1",
                  "--accuracy-sample-images", "7")
    )  # fmt: skip
    assert scoped == RecipeConfig.from_params(_dag_params(accuracy_batch_sizes=[1], accuracy_sample_images=7))
    assert scoped.accuracy_scope()["sampled"] == [4]


def test_old_flag_spellings_stay_as_aliases():
    new = _cli_args("--root_path", "d", "--random-init", "--batch-sizes", "4", "--work-dir", "w", "--cann-env", "e")
    old = _cli_args("--root_path", "d", "--random-init", "--batch_sizes", "4", "--work_dir", "w", "--cann_env", "e")
    assert vars(new) == vars(old)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"batch_sizes": [4, 4]}, "listed twice"),
        ({"batch_sizes": [0]}, "out of range"),
        ({"perf_loops": 0}, "perf loop count 0"),
        ({"baseline": "1:abc"}, "baseline '1:abc'"),
        ({"precision_mode": "fastest"}, "precision mode 'fastest'"),
        ({"opset": 9}, "opset 9"),
        ({"keep_runs": -1}, "keep_runs -1"),
        ({"cache_budget_gib": -1.0}, "cache_budget_gib -1"),
        # Accuracy scope: only the run's batch sizes, at least one full one, a sample of at least one image.
        ({"accuracy_batch_sizes": [1, 8]}, r"accuracy batch size\(s\) 8 are not among the batch sizes 1, 4"),
        ({"accuracy_batch_sizes": []}, "no accuracy batch size given"),
        ({"accuracy_batch_sizes": "some"}, "accuracy batch sizes 'some'"),
        ({"accuracy_sample_images": 0}, "accuracy sample images 0"),
    ],
)
def test_one_validation_names_the_bad_setting(change, words):
    with pytest.raises(InputError, match=words):
        RecipeConfig.from_params(_dag_params(**change))


def test_device_ids_from_the_form_and_the_cli():
    from twins_tasks.checks import parse_device_ids

    assert RecipeConfig.from_params(_dag_params(device_ids=[2, 3])).backend.device_ids == (2, 3)
    assert RecipeConfig.from_params(_dag_params(device_ids="auto")).backend.device_ids == "auto"
    args = _cli_args("--root_path", "d", "--random-init", "--device-ids", "0,1")
    assert recipe_from_args(args).backend.device_ids == (0, 1)
    assert recipe_from_args(_cli_args("--root_path", "d", "--random-init", "--device", "3")).backend.device_ids == (3,)
    with pytest.raises(InputError, match="listed twice"):
        parse_device_ids("1,1")
    # The backend's own device is the first chip (commands run outside a lease use it).
    assert BackendSettings(name="ascend", device_ids=(2, 3)).options("ascend")["device"] == 2


def test_backend_options_are_built_in_one_place():
    settings = BackendSettings(name="ascend", device_ids=(3,), soc_version="Ascend310P3", precision_mode="force_fp32")
    assert settings.options("ascend") == {"device": 3, "soc_version": "Ascend310P3", "precision_mode": "force_fp32"}
    assert BackendSettings(threads=2).options("onnxruntime") == {"providers": None, "threads": 2}


def test_check_paths_names_the_missing_path(tmp_path):
    config = RecipeConfig(dataset_path=str(tmp_path / "missing"), random_init=True)
    with pytest.raises(InputError, match=f"dataset folder {tmp_path / 'missing'} does not exist"):
        config.check_paths()
    config = RecipeConfig(dataset_path=str(tmp_path), checkpoint=str(tmp_path / "x.pth"))
    with pytest.raises(InputError, match="checkpoint .*x.pth does not exist"):
        config.check_paths()


@pytest.mark.parametrize(
    "error, retried",
    [
        (InputError("dataset folder /x does not exist"), False),
        (ToolError("atc failed (exit 255)", exit_code=255, lines=["E10001: bad"]), True),
        (MissingOutputError("3 outputs missing"), True),
    ],
)
def test_one_failure_mapping_for_operators_and_task_functions(error, retried):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from twins_airflow.exceptions import TwinsTaskError, maps_failures

    @maps_failures
    def body(params: dict) -> None:
        raise error

    with pytest.raises(AirflowException) as info:
        body(params={})
    assert isinstance(info.value, AirflowFailException) is not retried
    assert str(error) in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    if isinstance(error, ToolError):
        assert isinstance(info.value, TwinsTaskError) and info.value.lines == ["E10001: bad"]


def test_maps_failures_keeps_the_signature_airflow_inspects():
    import inspect

    from twins_airflow.exceptions import maps_failures

    def plan(params: dict, run_id: str = "") -> None: ...

    assert list(inspect.signature(maps_failures(plan)).parameters) == ["params", "run_id"]


def test_perf_prefers_the_chip_that_ran_inference_then_any_chip_of_the_run():
    import socket

    from twins_tasks.steps import chips_for_perf

    here = socket.gethostname()
    assert chips_for_perf([0, 1, 2], {"host": here, "chip": 2}) == [2, 0, 1]  # lease_chip tries them in order
    # Another NPU host took the perf task: any of the run's chips there measures the same shared artifact.
    assert chips_for_perf([0, 1, 2], {"host": f"not-{here}", "chip": 2}) == [0, 1, 2]
    assert chips_for_perf([], {"host": here, "chip": None}) == []  # ONNX Runtime: no chips, no lease


def test_skipped_images_reach_the_run_record():
    from twins_tasks.results import build_run

    inputs = {
        "dataset_fingerprint": "f",
        "root_path": "/data/val",
        "num_images": 3,
        "label_scheme": "imagenet",
        "bad": [["/data/val/n01440764/a.JPEG", "cannot identify image file"]],
    }
    model = {"model_name": "twins_svt_large", "weights": "random-init seed=0", "random_init": True, "seed": 0}
    run = build_run(
        run_key="r", source="cli", inputs=inputs, model=model, backend={"backend": "onnxruntime"}, options={}
    )
    assert run["num_skipped"] == 1 and run["skipped_images"] == ["n01440764/a.JPEG"]
    assert run["config"]["label_scheme"] == "imagenet"


def test_check_paths_says_a_checkpoint_folder_is_a_folder(tmp_path):
    config = RecipeConfig(dataset_path=str(tmp_path), checkpoint=str(tmp_path))
    with pytest.raises(InputError) as refused:
        config.check_paths()
    message = str(refused.value)
    assert message.startswith(f"checkpoint {tmp_path} is a folder, not a checkpoint file: pass the .pth file itself")
    assert "--resume" in message and "'Checkpoint' Param" in message and "does not exist" not in message
