"""Accuracy scope (issue 19): batch sizes outside ``accuracy_batch_sizes`` infer only the first N images and are
checked against a full batch size's outputs on them; a disagreement fails that batch size, naming both; the
report and the run page say which batch size was scored in full and which was checked against which."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_onnxruntime_backend import _export, _tiny_net, _write_inputs

from twins_tasks import results_views as views
from twins_tasks.layout import find_outputs, list_inputs, read_output, write_output
from twins_tasks.preprocess.manifest import ManifestRow, write_manifest
from twins_tasks.recipe import BackendSettings, RecipeConfig
from twins_tasks.report import write_report
from twins_tasks.results import collect_rows, record_results, run_status
from twins_tasks.steps import infer_step, perf_step, sample_for
from twins_tasks.store import ResultsStore

IMAGES = 6
SAMPLE = 4


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """bs1 scores the full dataset, bs2 a sample of 4: compiled, inferred and measured with a tiny ONNX model."""
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend

    root = tmp_path_factory.mktemp("scope")
    backend = OnnxRuntimeBackend(threads=1)
    onnx = _export(_tiny_net(), root / "tiny.onnx")
    bins = root / "bins"
    _write_inputs(bins, IMAGES)
    write_manifest(bins, [ManifestRow(f"img{i}", f"c/img{i}.JPEG", i % 3, "c", "ok") for i in range(1, IMAGES + 1)])
    config = RecipeConfig(
        dataset_path=str(root), random_init=True, backend=BackendSettings(name="onnxruntime"), batch_sizes=(2, 1),
        accuracy_batch_sizes=(1,), accuracy_sample_images=SAMPLE,
    )  # fmt: skip
    scope = config.accuracy_scope()
    records: dict[str, list[dict[str, Any] | None]] = {"compile": [], "infer": [], "perf": []}
    for bs in (2, 1):  # the sampled one first: scoring waits for every chain, as the DAG's accuracy task
        artifact = backend.compile(onnx, bs, root / "compiled").artifact
        records["compile"].append({"batch_size": bs, "artifact": artifact, "compile_seconds": 0.0, "cached": False})
        records["infer"].append(
            infer_step(
                backend, artifact, bins, bs, root / "result", f"tiny_bs{bs}", "TXT", sample_images=sample_for(scope, bs)
            )  # fmt: skip
        )
        records["perf"].append(perf_step(backend, artifact, bs, loop=2))
    return {"root": root, "bins": bins, "config": config, "scope": scope, "records": records}


def _inputs(bins: Path) -> dict[str, Any]:
    return {"bin_path": str(bins), "root_path": str(bins), "dataset_fingerprint": "f" * 16, "num_images": IMAGES}


def test_the_scope_from_the_configuration():
    config = RecipeConfig(dataset_path="d", random_init=True, batch_sizes=(8, 1, 4), accuracy_batch_sizes=(4, 1))
    assert config.accuracy_scope() == {
        "full": [1, 4], "sampled": [8], "sample_images": 500, "min_agreement_top1": 90.0, "max_abs_diff": 0.5,
    }  # fmt: skip
    everything = RecipeConfig(dataset_path="d", random_init=True, batch_sizes=(1, 4)).accuracy_scope()
    assert everything["full"] == [1, 4] and everything["sampled"] == []  # "all": the recipe's way
    assert sample_for(config.accuracy_scope(), 8) == 500 and sample_for(config.accuracy_scope(), 4) is None
    assert sample_for(None, 8) is None  # a plan made before accuracy scopes: every batch size full
    assert RecipeConfig.from_dict(config.to_dict()) == config


def test_the_sampled_batch_size_infers_only_the_first_images_from_links(chains):
    full, sampled = {r["batch_size"]: r for r in chains["records"]["infer"]}[1], chains["records"]["infer"][0]
    assert full["num_outputs"] == IMAGES and sorted(find_outputs(full["output_dir"])) == [
        f"img{i}" for i in range(1, IMAGES + 1)
    ]
    assert sampled["batch_size"] == 2 and sampled["num_outputs"] == SAMPLE
    assert sorted(find_outputs(sampled["output_dir"])) == ["img1", "img2", "img3", "img4"]
    # One folder of hard links per run (no copy), beside the outputs: retention removes it with them.
    links = chains["root"] / "result" / f"inputs_first{SAMPLE}"
    assert [p.name for p in list_inputs(links)] == ["img1.bin", "img2.bin", "img3.bin", "img4.bin"]
    assert all(os.path.samefile(p, chains["bins"] / p.name) for p in links.iterdir())
    # Never more than the dataset: a sample as large as the dataset is the dataset itself.
    again = infer_step(
        _backend(), chains["records"]["compile"][0]["artifact"], chains["bins"], 2, chains["root"] / "big", "bs2",
        "TXT", sample_images=IMAGES + 10,
    )  # fmt: skip
    assert again["num_outputs"] == IMAGES and not list((chains["root"] / "big").glob("inputs_first*"))


def _backend():
    from twins_tasks.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(threads=1)


def test_agreement_with_the_full_batch_size_is_recorded_and_reported(chains, tmp_path):
    inputs = _inputs(chains["bins"])
    rows = collect_rows([2, 1], chains["records"], inputs, None, tmp_path / "failures", chains["scope"])
    full, sampled = rows
    assert full["batch_size"] == 1 and full["num_images"] == IMAGES and full["top1"] is not None
    assert "accuracy_scope" not in full
    assert sampled["batch_size"] == 2 and sampled["status"] == "ok" and sampled["throughput"] > 0
    assert sampled["top1"] is None and sampled["top5"] is None and sampled["num_images"] == SAMPLE
    assert sampled["checked_against"] == 1 and sampled["sample_images"] == SAMPLE
    assert sampled["sample_agreement_top1"] == 100.0 and sampled["sample_max_abs_diff"] < 1e-4

    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    record_results(
        store, chains["config"], run_key="scoped", source="cli", inputs=inputs,
        model={"model_name": "tiny", "weights": "random-init seed=0", "random_init": True},
        backend_description={"backend": "onnxruntime"}, rows=rows, run_uid=None,
    )  # fmt: skip
    run = store.get_run("scoped")
    assert run["config"]["accuracy_scope"] == {
        "full": [1],
        "sampled": {"2": {"checked_against": 1, "sample_images": SAMPLE, "sample_agreement_top1": 100.0,
                          "sample_max_abs_diff": sampled["sample_max_abs_diff"]}},
    }  # fmt: skip
    report = write_report(store, "scoped", None, tmp_path)
    scope_line = (
        f"ACCURACY SCOPE: top-1/top-5 on the full dataset: bs1; sample-checked (the first {SAMPLE} images, outputs "
        "against a full batch size's, no top-1/top-5 of their own): bs2 against bs1"
    )
    assert f"- {scope_line}" in report.markdown
    assert "### Sample checks\n\n| batch size | checked against | images |" in report.markdown
    assert f"| 2 | bs1 | {SAMPLE} | 100.0 |" in report.markdown
    assert " ".join(scope_line.split()) in " ".join(report.text.split())
    assert "Sample checks against a full batch size" in " ".join(report.text.split())
    # The run page says the same.
    detail = views.run_detail(store, "scoped")
    assert detail is not None and detail["accuracy_scope"]["fact"] == scope_line
    assert [(c["batch_size"], c["checked_against"]) for c in detail["accuracy_scope"]["checks"]] == [(2, 1)]


def test_a_batch_size_that_disagrees_with_the_full_one_fails_naming_both(chains, tmp_path):
    # A constructed batch-size-specific bug: bs2's outputs of two images have another top-1 class.
    broken = tmp_path / "tiny_bs2"
    broken.mkdir()
    outputs = find_outputs(chains["records"]["infer"][0]["output_dir"])
    for stem, path in outputs.items():
        values = read_output(path, 1000)
        if stem in ("img1", "img3"):
            values = -values
        write_output(broken / path.name, values.reshape(1, -1), "TXT")
    records = {**chains["records"], "infer": [{**chains["records"]["infer"][0], "output_dir": str(broken)},
                                              chains["records"]["infer"][1]]}  # fmt: skip
    rows = collect_rows([1, 2], records, _inputs(chains["bins"]), None, tmp_path / "failures", chains["scope"])
    ok, failed = rows
    assert ok["status"] == "ok" and failed["status"] == "failed" and run_status(rows) == "partial"
    assert failed["error"].startswith(f"accuracy: bs2's outputs disagree with bs1's on the first {SAMPLE} images: ")
    assert "top-1 agreement 50.0% < 90.0%" in failed["error"] and "max abs diff" in failed["error"]
    assert failed["checked_against"] == 1 and failed["sample_agreement_top1"] == 50.0  # the numbers stay shown

    # No full batch size with outputs (its inference failed): nothing to check against, so bs2 fails too.
    alone = {**chains["records"], "infer": [chains["records"]["infer"][0]]}
    rows = collect_rows([1, 2], alone, _inputs(chains["bins"]), None, tmp_path / "failures", chains["scope"])
    assert rows[1]["status"] == "failed" and "no full batch size (bs1) has outputs to check bs2's" in rows[1]["error"]
