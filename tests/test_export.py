"""pth2onnx: strict checkpoint loading, explicit random init, ONNX export with a dynamic batch, parity with PyTorch.

Most tests use timm ``twins_svt_small`` (same Twins code and key layout as twins_svt_large, a quarter of the
size); the one test marked ``model`` exports the real twins_svt_large through the CLI.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from twins_tasks import cli
from twins_tasks.errors import CheckpointError, InputError, ParityError
from twins_tasks.export import build_model, export_onnx, load_checkpoint, load_model, parity_path
from twins_tasks.files import sha256_file

SMALL = "twins_svt_small"


@pytest.fixture
def run_cli(monkeypatch):
    # Only this step's subcommands: these tests must not depend on the other steps' modules importing.
    monkeypatch.setattr(cli, "STEP_MODULES", ("export", "reference"))
    return cli.main


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    """Weights to save in checkpoints: a seeded random twins_svt_small."""
    model, _ = load_model(SMALL, random_init=True, seed=7)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def target() -> torch.nn.Module:
    return build_model(SMALL)


def _wipe(model: torch.nn.Module) -> None:
    """Zero every tensor so that a load that silently did nothing cannot pass."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.zero_()


def _assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.mark.parametrize(
    "variant", ["plain", "model", "state_dict", "module_prefix", "model_module_prefix", "training_checkpoint"]
)
def test_checkpoint_variants_load_identical_weights(tmp_path, source_state, target, variant):
    prefixed = {f"module.{k}": v for k, v in source_state.items()}
    obj = {
        "plain": source_state,
        "model": {"model": source_state},
        "state_dict": {"state_dict": source_state, "epoch": 3},
        "module_prefix": prefixed,
        "model_module_prefix": {"model": prefixed},
        # What DeiT-style training scripts (Twins' main.py) save: extra entries and the argparse Namespace.
        "training_checkpoint": {
            "model": source_state,
            "optimizer": {"state": {}},
            "epoch": 299,
            "args": argparse.Namespace(model="alt_gvt_large", lr=5e-4),
        },
    }[variant]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    _wipe(target)
    info = load_checkpoint(target, path)
    _assert_same(target, source_state)
    assert info["checkpoint"] == str(path)
    assert info["checkpoint_sha256"] == sha256_file(path)
    assert info["stripped_module_prefix"] == ("module_prefix" in variant)
    assert info["checkpoint_format"] == {"plain": "plain", "module_prefix": "plain", "state_dict": "state_dict"}.get(
        variant, "model"
    )


def test_missing_keys_are_named(tmp_path, source_state, target):
    state = dict(source_state)
    del state["head.weight"], state["blocks.0.0.attn.qkv.bias"]
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, tmp_path / "ckpt.pth")
    message = str(err.value)
    assert "2 missing keys" in message and "head.weight" in message and "blocks.0.0.attn.qkv.bias" in message
    assert "unexpected" not in message and "--model" in message


def test_unexpected_keys_are_named(tmp_path, source_state, target):
    state = {**source_state, "head_dist.weight": torch.zeros(3), "pos_block.9.proj.0.bias": torch.zeros(3)}
    torch.save({"model": state}, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, tmp_path / "ckpt.pth")
    message = str(err.value)
    assert "2 unexpected keys: head_dist.weight, pos_block.9.proj.0.bias" in message
    assert "missing" not in message


def test_shape_mismatch_is_named(tmp_path, source_state, target):
    state = {**source_state, "head.weight": torch.zeros(10, source_state["head.weight"].shape[1])}
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match=r"1 shape mismatches: head\.weight \(10, 512\) vs model \(1000, 512\)"):
        load_checkpoint(target, tmp_path / "ckpt.pth")


def test_many_bad_keys_are_listed_with_counts(tmp_path, source_state, target):
    # A twins_svt_large checkpoint given to the small model: every problem counted, only the first few listed.
    state = {f"extra.{i}": torch.zeros(1) for i in range(25)}
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(target, tmp_path / "ckpt.pth")
    message = str(err.value)
    assert f"{len(source_state)} missing keys" in message and "25 unexpected keys" in message
    assert f"... and {len(source_state) - 10} more" in message and "... and 15 more" in message
    assert "extra.0, extra.1, extra.10" in message and "extra.24" not in message


@pytest.mark.parametrize("content", ["text", "npy", "list", "not_tensors"])
def test_not_a_checkpoint_names_the_path(tmp_path, target, content):
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("this is not a checkpoint\n")
    elif content == "npy":
        np.save(open(path, "wb"), np.ones(3))
    elif content == "list":
        torch.save([torch.ones(2)], path)
    else:
        torch.save({"lr": 0.1, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {path} ")):
        load_checkpoint(target, path)


def test_nonexistent_and_directory_checkpoint(tmp_path, target):
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'nope.pth'} does not exist")):
        load_checkpoint(target, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path} is not a file")):
        load_checkpoint(target, tmp_path)


def test_weights_must_be_chosen_explicitly(tmp_path):
    with pytest.raises(InputError, match="--random-init"):
        load_model(SMALL)
    with pytest.raises(InputError, match="choose one"):
        load_model(SMALL, resume=tmp_path / "x.pth", random_init=True, seed=1)
    with pytest.raises(InputError, match="no checkpoint"):
        export_onnx(tmp_path / "m.onnx", model_name=SMALL)
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_model_name():
    with pytest.raises(InputError, match="'twins_svt_huge'.*twins_svt_large"):
        build_model("twins_svt_huge")


def test_random_init_is_reproducible_by_seed(source_state):
    again, weights = load_model(SMALL, random_init=True, seed=7)
    _assert_same(again, source_state)
    assert weights == {
        "weights": "random-init seed=7 (not trained weights)",
        "random_init": True,
        "seed": 7,
        "checkpoint": None,
        "checkpoint_sha256": None,
    }
    other, _ = load_model(SMALL, random_init=True, seed=8)
    assert not torch.equal(other.state_dict()["head.weight"], source_state["head.weight"])


def test_cli_without_weights_fails_with_message(tmp_path, run_cli, capsys):
    assert run_cli(["pth2onnx", "--output", str(tmp_path / "m.onnx"), "--model", SMALL]) == 2  # bad input
    err = capsys.readouterr().err
    assert "twins pth2onnx: error: no checkpoint given" in err and "--random-init --seed S" in err
    assert (
        run_cli(
            ["pth2onnx", "--output", str(tmp_path / "m.onnx"), "--resume", str(tmp_path / "nope.pth"), "--model", SMALL]
        )
        == 2
    )
    assert f"checkpoint {tmp_path / 'nope.pth'} does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "twins_small.onnx"
    record = export_onnx(out, model_name=SMALL, random_init=True, seed=0, opset=11)
    return out, record


def test_export_record_says_random_weights(exported):
    out, record = exported
    assert record["onnx"] == str(out) and record["sha256"] == sha256_file(out)
    assert record["weights"] == "random-init seed=0 (not trained weights)"
    assert record["random_init"] is True and record["checkpoint_sha256"] is None
    assert record["model"] == SMALL and record["opset"] == 11
    parity = record["parity"]
    assert parity["passed"] and parity["failures"] == []
    assert 0 <= parity["max_abs_diff"] <= 1e-3 and 0 <= parity["batch1_max_abs_diff"] <= 1e-3
    assert parity["top1_agreement"] == 1.0 and parity["batch"] == 2
    # Nothing half-written left beside the model.
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.name + ".sha256", "twins_small.parity.json"]
    )


def test_export_graph_interface(exported):
    out, _ = exported
    model = onnx.load(str(out), load_external_data=False)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    dims_in = model.graph.input[0].type.tensor_type.shape.dim
    dims_out = model.graph.output[0].type.tensor_type.shape.dim
    assert dims_in[0].dim_param and not dims_in[0].HasField("dim_value")  # symbolic batch
    assert [d.dim_value for d in dims_in[1:]] == [3, 224, 224]
    assert dims_out[0].dim_param == dims_in[0].dim_param and dims_out[1].dim_value == 1000
    assert {o.domain: o.version for o in model.opset_import}[""] == 11


def test_export_runs_at_other_batch_sizes(exported):
    out, _ = exported
    model, _ = load_model(SMALL, random_init=True, seed=0)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        images = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
        got = session.run(["output"], {"input": images})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(images)).numpy()
        assert got.shape == (batch, 1000)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_parity_json_beside_model(exported):
    out, record = exported
    path = parity_path(out)
    assert path == out.with_name("twins_small.parity.json")
    saved = json.loads(path.read_text())
    assert saved["weights"] == "random-init seed=0 (not trained weights)" and saved["random_init"] is True
    assert saved["model"] == SMALL and saved["opset"] == 11 and saved["sha256"] == record["sha256"]
    assert saved["parity"]["passed"] is True and saved["parity"]["max_abs_diff"] == record["parity"]["max_abs_diff"]
    assert set(saved["versions"]) == {"torch", "timm", "onnx", "onnxruntime"}
    assert saved["versions"]["onnxruntime"] == ort.__version__
    assert saved["export_seconds"] > 0


def test_parity_failure_keeps_model_and_says_failed(tmp_path, source_state, monkeypatch):
    """A checkpoint export whose ONNX Runtime outputs drift by 0.01: ParityError, file kept, JSON says failed."""
    ckpt = tmp_path / "small.pth"
    torch.save({"model": source_state}, ckpt)
    real_run = ort.InferenceSession.run

    def drifting_run(self, output_names, feed, *args, **kwargs):
        return [o + np.float32(0.01) for o in real_run(self, output_names, feed, *args, **kwargs)]

    monkeypatch.setattr(ort.InferenceSession, "run", drifting_run)
    out = tmp_path / "drift.onnx"
    with pytest.raises(ParityError, match=r"max abs diff 0\.01 > atol 0\.001") as err:
        export_onnx(out, model_name=SMALL, resume=ckpt, opset=11)
    assert f"checkpoint {ckpt} sha256=" in str(err.value) and str(parity_path(out)) in str(err.value)
    assert out.is_file()
    saved = json.loads(parity_path(out).read_text())
    assert saved["parity"]["passed"] is False and saved["parity"]["failures"]
    assert saved["random_init"] is False and saved["checkpoint_sha256"] == sha256_file(ckpt)
    assert saved["weights"] == f"checkpoint {ckpt} sha256={sha256_file(ckpt)}"


def test_bad_export_options_rejected_before_work(tmp_path):
    with pytest.raises(InputError, match="--parity-batch 0"):
        export_onnx(tmp_path / "m.onnx", model_name=SMALL, random_init=True, parity_batch=0)
    with pytest.raises(InputError, match="atol -1"):
        export_onnx(tmp_path / "m.onnx", model_name=SMALL, random_init=True, atol=-1)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ the real model


@pytest.mark.model
def test_cli_exports_twins_svt_large_from_checkpoint(tmp_path, run_cli, capsys):
    """The recipe's command on the real model: a plain state dict checkpoint of twins_svt_large, opset 11."""
    model, _ = load_model("twins_svt_large", random_init=True, seed=3)
    assert sum(p.numel() for p in model.parameters()) == 99_271_400  # == Twins alt_gvt_large
    ckpt = tmp_path / "alt_gvt_large.pth"
    torch.save(model.state_dict(), ckpt)
    del model
    out = tmp_path / "alt_gvt_large.onnx"
    assert run_cli(["pth2onnx", "--resume", str(ckpt), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Weights: checkpoint {ckpt} sha256={sha256_file(ckpt)}" in printed
    assert "top-1 agreement 100.0%" in printed and ": passed" in printed
    assert out.stat().st_size > 350 * 2**20
    saved = json.loads(parity_path(out).read_text())
    assert saved["model"] == "twins_svt_large" and saved["opset"] == 11 and saved["parity"]["passed"]
    assert saved["parity"]["max_abs_diff"] <= 1e-3 and saved["random_init"] is False
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert isinstance(session.get_inputs()[0].shape[0], str) and session.get_inputs()[0].shape[1:] == [3, 224, 224]
    got = session.run(["output"], {"input": np.zeros((3, 3, 224, 224), np.float32)})[0]
    assert got.shape == (3, 1000) and np.isfinite(got).all()


# ------------------------------------------------------------------------------------ refusals, disk full


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_malicious_checkpoint_refusal_says_why_whole(tmp_path, target):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(target, path)
    message = str(info.value)
    assert "would run code on load" in message
    assert re.search(r"the Python callable (posix|os)\.system \(", message), message
    assert "refused without running anything" in message and "weights_only" not in message
    assert message.rstrip().endswith("re-saved as its state dict only")  # nothing cut off


@pytest.fixture
def small_disk(tmpfs):
    """A 2 MiB tmpfs, or a skip saying why there is none."""
    return tmpfs("2m", "small")


def test_export_on_a_full_disk_says_no_space_and_leaves_nothing(small_disk, run_cli, capsys):
    out = small_disk / "model.onnx"
    argv = ["pth2onnx", "--model", SMALL, "--random-init", "--output", str(out)]
    assert run_cli(argv) == 2  # a full disk: bad input, not retried
    err = capsys.readouterr().err
    assert f"error: no space left on {small_disk} (No space left on device;" in err
    assert "pass another --output" in err and "--opset" not in err
    assert list(small_disk.iterdir()) == []  # no temp file


def test_cached_export_on_a_full_disk_names_the_cache(small_disk):
    from twins_tasks.export import prepare_model

    with pytest.raises(InputError, match=rf"no space left on {small_disk} .*use another --work_dir"):
        prepare_model(small_disk, model_name=SMALL, random_init=True)
    assert list((small_disk / "onnx").iterdir()) == []  # the temp folder went with the failure


def test_checkpoint_folder_is_called_a_folder(tmp_path):
    from twins_tasks.export import prepare_model

    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {tmp_path} is not a file but a folder: pass")):
        load_checkpoint(torch.nn.Linear(1, 1), tmp_path)  # refused before anything is loaded
    with pytest.raises(InputError) as refused:
        prepare_model(tmp_path / "cache", resume=str(tmp_path))
    message = str(refused.value)
    assert message.startswith(f"checkpoint {tmp_path} is a folder, not a checkpoint file: pass the .pth file itself")
    assert "does not exist" not in message and not (tmp_path / "cache").exists()
