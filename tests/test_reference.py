"""reference + compare: PyTorch logits for the first K inputs, and agreement of a backend's outputs with them.

The prediction folders are built from the reference logits themselves, so the expected agreement is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from twins_tasks import cli
from twins_tasks.constants import BIN_BYTES
from twins_tasks.errors import InputError, MissingOutputError, ParityError
from twins_tasks.export import load_model
from twins_tasks.layout import output_path, write_output
from twins_tasks.reference import compare_with_reference, load_reference, reference_logits

SMALL = "twins_svt_small"
# Natural order puts img_2 before img_10 (a plain sort would not); `notes.txt` is not an input.
NAMES = ["img_10", "img_1", "img_2", "img_3", "img_11"]
ORDER = ["img_1", "img_2", "img_3", "img_10", "img_11"]


@pytest.fixture
def run_cli(monkeypatch):
    # Only this step's subcommands: these tests must not depend on the other steps' modules importing.
    monkeypatch.setattr(cli, "STEP_MODULES", ("export", "reference"))
    return cli.main


@pytest.fixture(scope="module")
def bins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bins")
    rng = np.random.default_rng(0)
    for name in NAMES:
        rng.standard_normal(BIN_BYTES // 4, dtype=np.float32).tofile(folder / f"{name}.bin")
    (folder / "notes.txt").write_text("not an input\n")
    return folder


@pytest.fixture(scope="module")
def reference(bins, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref") / "reference.npz"
    # limit 4 of 5 inputs, batch 3: one full batch and one short one.
    record = reference_logits(bins, out, model_name=SMALL, random_init=True, seed=0, limit=4, batch_size=3)
    return out, record


def _predictions(folder: Path, stems: list[str], logits: np.ndarray, outfmt: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, row in zip(stems, logits, strict=False):
        write_output(output_path(folder, stem, 0, outfmt), row.reshape(1, -1), outfmt)
    return folder


def test_reference_file(bins, reference):
    out, record = reference
    stems, logits, meta = load_reference(out)
    assert stems == ORDER[:4]
    assert logits.shape == (4, 1000) and logits.dtype == np.float32
    assert meta["weights"] == "random-init seed=0 (not trained weights)" and meta["random_init"] is True
    assert meta["model"] == SMALL and meta["num_images"] == 4 and meta["limit"] == 4
    assert record["reference"] == str(out) and record["weights"] == meta["weights"]
    assert record["first_stem"] == "img_1" and record["last_stem"] == "img_10"
    assert [p.name for p in out.parent.iterdir()] == ["reference.npz"]  # no temp file left


def test_reference_logits_are_the_model_outputs(bins, reference):
    out, _ = reference
    _, logits, _ = load_reference(out)
    model, _ = load_model(SMALL, random_init=True, seed=0)
    image = np.fromfile(bins / "img_10.bin", dtype=np.float32).reshape(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()[0]
    np.testing.assert_allclose(logits[3], expected, atol=1e-5, rtol=0)
    # The rows differ per image: the reference is not one constant vector.
    assert np.abs(logits[0] - logits[1]).max() > 1e-3


@pytest.mark.parametrize("outfmt", ["TXT", "NPY", "BIN"])
def test_compare_identical_outputs(tmp_path, reference, outfmt):
    out, _ = reference
    stems, logits, _ = load_reference(out)
    pred = _predictions(tmp_path / "pred", stems, logits, outfmt)
    # atol 0: exact for NPY/BIN; for TXT only the %f rounding is allowed.
    record = compare_with_reference(out, pred, min_top1_agreement=1.0, atol=0.0)
    assert record["passed"] and record["num_compared"] == 4 and record["num_missing"] == 0
    assert record["top1_agreement"] == 1.0 and record["top5_overlap"] == 1.0
    assert record["formats"] == {outfmt.lower(): 4}
    if outfmt == "TXT":
        assert 0 < record["max_abs_diff"] <= 1e-5 and 5e-7 <= record["txt_rounding"] < 1e-6
    else:
        assert record["max_abs_diff"] == 0.0 and record["txt_rounding"] == 0.0
    assert record["reference_weights"] == "random-init seed=0 (not trained weights)"


def test_compare_counts_disagreement_missing_and_unreadable(tmp_path, reference):
    out, _ = reference
    stems, logits, _ = load_reference(out)
    pred_logits = logits.copy()
    # Rolling a row by one class moves its top-1 (and changes the top-5 set) for sure.
    pred_logits[1] = np.roll(pred_logits[1], 1)
    pred = _predictions(tmp_path / "pred", stems, pred_logits, "TXT")
    output_path(pred, stems[3], 0, "TXT").unlink()  # img_10: missing
    (pred / "img_11_0.txt").write_text("1.0 \n")  # not in the reference: ignored
    (pred / "img_3_1.txt").write_text("1.0 \n")  # a second output index: ignored
    record = compare_with_reference(out, pred)
    assert record["num_compared"] == 3 and record["num_missing"] == 1 and record["missing"] == ["img_10"]
    assert record["top1_agreement"] == pytest.approx(2 / 3)
    assert record["top5_overlap"] < 1.0
    assert record["max_abs_diff"] == pytest.approx(float(np.abs(np.roll(logits[1], 1) - logits[1]).max()), abs=1e-5)
    assert record["passed"] and record["failures"] == []  # no thresholds given: report only

    write_output(output_path(pred, stems[0], 0, "TXT"), np.ones((1, 10), np.float32), "TXT")
    record = compare_with_reference(out, pred)
    assert record["num_invalid"] == 1 and "img_1_0.txt: expected 1000 values, found 10" in record["invalid"]["img_1"]
    assert record["num_compared"] == 2 and record["top1_agreement"] == pytest.approx(1 / 2)


def test_compare_threshold_failure_writes_json_then_raises(tmp_path, reference):
    out, _ = reference
    stems, logits, _ = load_reference(out)
    pred_logits = logits.copy()
    pred_logits[:2] = np.roll(pred_logits[:2], 1, axis=1)
    pred = _predictions(tmp_path / "pred", stems, pred_logits, "NPY")
    json_path = tmp_path / "compare.json"
    with pytest.raises(ParityError, match=r"top-1 agreement 50\.0% < 99\.0%"):
        compare_with_reference(out, pred, min_top1_agreement=0.99, json_path=json_path)
    saved = json.loads(json_path.read_text())
    assert saved["passed"] is False and saved["top1_agreement"] == 0.5 and saved["num_compared"] == 4


def test_compare_nothing_to_compare(tmp_path, reference):
    out, _ = reference
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingOutputError, match="none of the 4 reference images"):
        compare_with_reference(out, tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        compare_with_reference(out, tmp_path / "nope")
    with pytest.raises(InputError, match="twins reference"):
        compare_with_reference(tmp_path / "nope.npz", tmp_path / "empty")


def test_reference_rejects_wrong_input_size(tmp_path):
    np.ones(100, np.float32).tofile(tmp_path / "bad.bin")
    with pytest.raises(InputError, match=r"bad\.bin has 100 float32 values, expected 150528"):
        reference_logits(tmp_path, tmp_path / "r.npz", model_name=SMALL, random_init=True, seed=0)
    assert not (tmp_path / "r.npz").exists()


def test_reference_needs_weights_choice(bins, tmp_path):
    with pytest.raises(InputError, match="no checkpoint given"):
        reference_logits(bins, tmp_path / "r.npz", model_name=SMALL)


def test_cli_reference_and_compare(tmp_path, bins, reference, run_cli, capsys):
    out, _ = reference
    stems, logits, _ = load_reference(out)
    # The CLI writes its own reference (2 images) with the same weights: equal to the fixture's first rows.
    cli_ref = tmp_path / "cli_ref.npz"
    assert (
        run_cli(
            [
                "reference",
                "--bin_path",
                str(bins),
                "--output",
                str(cli_ref),
                "--model",
                SMALL,
                "--random-init",
                "--seed",
                "0",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "for 2 images (img_1 .. img_2)" in printed and "Weights: random-init seed=0 (not trained weights)" in printed
    cli_stems, cli_logits, _ = load_reference(cli_ref)
    assert cli_stems == stems[:2]
    np.testing.assert_allclose(cli_logits, logits[:2], atol=1e-5, rtol=0)

    pred = _predictions(tmp_path / "pred", stems[:3], logits[:3], "TXT")
    json_path = tmp_path / "cmp.json"
    assert run_cli(["compare", "--reference", str(out), "--pred", str(pred), "--json", str(json_path)]) == 0
    printed = capsys.readouterr().out
    assert "Agreement with PyTorch reference on 3 images: top-1 100.0%" in printed
    assert "Missing outputs: 1 of 4: img_10" in printed
    assert "Reference weights: random-init seed=0 (not trained weights)" in printed
    assert json.loads(json_path.read_text())["num_missing"] == 1

    assert (
        run_cli(["compare", "--reference", str(out), "--pred", str(pred), "--atol", "0", "--min-top1-agreement", "1"])
        == 0
    )
    capsys.readouterr()
    np.roll(logits[0], 3).reshape(1, -1).astype(np.float32).tofile(pred / "img_1_0.bin")
    (pred / "img_1_0.txt").unlink()
    assert run_cli(["compare", "--reference", str(out), "--pred", str(pred), "--min-top1-agreement", "0.9"]) == 1
    captured = capsys.readouterr()
    assert "top-1 66.7%" in captured.out
    assert "twins compare: error:" in captured.err and "top-1 agreement 66.7% < 90.0%" in captured.err
