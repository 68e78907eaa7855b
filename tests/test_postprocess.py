"""Accuracy scoring: exact percentages and lines, missing/unreadable outputs, label sources, CLI exit codes."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from twins_tasks.errors import InputError
from twins_tasks.labels import IMAGENET, POSITION
from twins_tasks.layout import output_path, write_output
from twins_tasks.postprocess import MANIFEST_NAME, load_labels, score

# 10 images; where each label ranks in its logits: rank 0 = top-1 hit, 1..4 = top-5 hit only, >4 = miss.
# 7 top-1 hits, 2 more top-5 hits, 1 miss -> top-1 70.0%, top-5 90.0%.
RANKS = [0, 0, 0, 0, 0, 0, 0, 1, 4, 5]
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]


def _logits(label: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """1000 logits in which ``label`` is the ``rank``-th largest (ranks 0..4 are inside the top 5)."""
    values = rng.uniform(-5, 0, 1000).astype(np.float32)
    others = [c for c in rng.permutation(1000) if c != label][:rank]
    for place, cls in enumerate(others):  # the classes that beat the label, strictly ordered
        values[cls] = 10.0 - place
    values[label] = 10.0 - rank
    return values.reshape(1, 1000)


def _stem(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}"


def _labels() -> dict[str, int]:
    return {_stem(i): i % len(WNIDS) for i in range(1, len(RANKS) + 1)}


def _write_preds(folder: Path, fmt: str = "TXT", skip: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (stem, label), rank in zip(_labels().items(), RANKS, strict=False):
        if stem not in skip:
            write_output(output_path(folder, stem, 0, fmt), _logits(label, rank, rng), fmt)
    return folder


def _val_folder(root: Path) -> Path:
    """ImageNet val layout <wnid>/<image>.JPEG; contents are never read by scoring."""
    for stem, label in _labels().items():
        (root / WNIDS[label]).mkdir(parents=True, exist_ok=True)
        (root / WNIDS[label] / f"{stem}.JPEG").write_bytes(b"")
    return root


def _manifest(path: Path, extra_rows: list[dict[str, str]] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["stem", "source", "label", "wnid", "status", "reason"])
        writer.writeheader()
        for stem, label in _labels().items():
            writer.writerow(
                {
                    "stem": stem,
                    "source": f"val/{WNIDS[label]}/{stem}.JPEG",
                    "label": label,
                    "wnid": WNIDS[label],
                    "status": "ok",
                    "reason": "",
                }
            )
        writer.writerows(extra_rows)
    return path


@pytest.mark.parametrize("fmt", ["TXT", "NPY", "BIN"])
def test_exact_top1_top5_for_every_format(tmp_path: Path, fmt: str) -> None:
    result = score(_write_preds(tmp_path / "pred", fmt), _val_folder(tmp_path / "val"))
    assert (result.n_total, result.n_scored, result.correct1, result.correct5) == (10, 10, 7, 9)
    assert (result.top1, result.top5) == (70.0, 90.0)
    assert result.complete and not result.missing and not result.unreadable
    assert result.report_lines() == [
        "Accuracy of the network on the 10 val images: 70.0%",
        "Top-5 accuracy of the network on the 10 val images: 90.0%",
    ]


def test_missing_and_unreadable_outputs_count_as_wrong_and_are_named(tmp_path: Path) -> None:
    pred = _write_preds(tmp_path / "pred", skip=(_stem(1), _stem(2)))  # two top-1 hits never written
    (pred / f"{_stem(3)}_0.txt").write_text("0.1 0.2 0.3 \n")  # a short file
    (pred / f"{_stem(4)}_0.txt").write_bytes(b"\x89PNG garbage \xff\xfe")
    np.save(pred / f"{_stem(5)}_0.npy", np.full((1, 1000), np.nan, np.float32))
    (pred / f"{_stem(5)}_0.txt").unlink()
    (pred / "extra_image_0.txt").write_text("1.0 \n")  # an output nobody labelled

    result = score(pred, _val_folder(tmp_path / "val"))
    assert result.n_total == 10 and result.n_scored == 5
    assert (result.correct1, result.correct5) == (2, 4)  # 7 hits minus the 5 lost ones; top-5 9 - 5
    assert (result.top1, result.top5) == (20.0, 40.0)
    assert result.missing == [_stem(1), _stem(2)]
    assert [stem for stem, _ in result.unreadable] == [_stem(3), _stem(4), _stem(5)]
    reasons = dict(result.unreadable)
    assert "expected 1000 values, found 3" in reasons[_stem(3)]
    assert reasons[_stem(5)].endswith("non-finite values (nan/inf)")
    assert result.unlabelled == ["extra_image"] and not result.complete
    lines = result.report_lines()
    assert lines[0] == "Accuracy of the network on the 10 val images: 20.0%"
    assert lines[2] == (f"Missing outputs (counted as wrong): 2: {_stem(1)}, {_stem(2)}")
    assert lines[3].startswith(
        f"Unreadable outputs (counted as wrong): 3: {_stem(3)} ({_stem(3)}_0.txt: "
        f"expected 1000 values, found 3); {_stem(4)} ({_stem(4)}_0.txt: "
    )
    assert lines[4] == "Outputs without a label (ignored): 1: extra_image"


def test_manifest_file_or_bin_folder_and_skipped_rows(tmp_path: Path) -> None:
    pred = _write_preds(tmp_path / "pred")
    skipped = {
        "stem": "ILSVRC2012_val_00000099",
        "source": "val/n01440764/ILSVRC2012_val_00000099.JPEG",
        "label": "0",
        "wnid": "n01440764",
        "status": "skipped",
        "reason": "cannot identify image file",
    }
    manifest = _manifest(tmp_path / "bins" / MANIFEST_NAME, [skipped])
    for where in (manifest, manifest.parent):
        result = score(pred, where)
        assert (result.n_total, result.correct1, result.correct5) == (10, 7, 9)  # skipped row not counted
        assert result.skipped == [("ILSVRC2012_val_00000099", "cannot identify image file")]
        assert result.labels_source == str(manifest)
    assert result.report_lines()[2] == (
        "Skipped by preprocess (not in the 10 images): 1: ILSVRC2012_val_00000099 (cannot identify image file)"
    )


def test_val_folder_labels_follow_sorted_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "val"
    for rel in (
        "n02/b.JPEG",
        "n01/a.x.jpeg",
        "n10/c.png",
        "n03/sub/d.webp",
        "n03/notes.txt",
        ".ipynb_checkpoints/e.jpg",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    # hidden folders are no class; stems end at the first dot, as preprocess names the bins
    assert load_labels(root).labels == {"a": 0, "b": 1, "d": 2, "c": 3}
    assert load_labels(root).scheme == POSITION


def test_wnid_folders_score_against_imagenet_indices_and_positions_are_flagged(tmp_path: Path) -> None:
    # A 2-class subset of ImageNet whose model outputs predict the true ImageNet class (index 999):
    # with labels as folder positions (0, 1) this scored 0%.
    root = tmp_path / "val"
    for wnid, stem in (("n01440764", "a"), ("n15075141", "b")):
        (root / wnid).mkdir(parents=True)
        (root / wnid / f"{stem}.JPEG").write_bytes(b"")
    pred = tmp_path / "pred"
    pred.mkdir()
    rng = np.random.default_rng(0)
    write_output(output_path(pred, "a", 0, "TXT"), _logits(0, 0, rng), "TXT")
    write_output(output_path(pred, "b", 0, "TXT"), _logits(999, 0, rng), "TXT")
    result = score(pred, root)
    assert (result.top1, result.label_scheme) == (100.0, IMAGENET)
    assert not any(line.startswith("Labels:") for line in result.report_lines())

    other = tmp_path / "other"
    for folder, stem in (("cats", "a"), ("dogs", "b")):
        (other / folder).mkdir(parents=True)
        (other / folder / f"{stem}.JPEG").write_bytes(b"")
    result = score(pred, other)
    assert result.label_scheme == POSITION
    assert (
        result.report_lines()[-1]
        == "Labels: positions among the sorted class folders (folder names are not ImageNet wnids)"
    )


def test_label_source_errors_name_the_problem(tmp_path: Path) -> None:
    pred = _write_preds(tmp_path / "pred")
    with pytest.raises(InputError, match="does not exist"):
        score(pred, tmp_path / "nowhere")
    bad = tmp_path / "bad.csv"
    bad.write_text("stem,label\nx,1\n")
    with pytest.raises(InputError, match="lacks column.*status"):
        score(pred, bad)
    _manifest(tmp_path / "m2" / MANIFEST_NAME, [{"stem": "y", "label": "cat", "status": "ok"}])
    with pytest.raises(InputError, match=r"line 12: label 'cat' of 'y' is not an integer"):
        score(pred, tmp_path / "m2")
    (tmp_path / "bins_only").mkdir()
    (tmp_path / "bins_only" / "x.bin").write_bytes(b"")
    with pytest.raises(InputError, match=r"holds \.bin inputs but no manifest\.csv"):
        score(pred, tmp_path / "bins_only")
    with pytest.raises(InputError, match="is not a folder"):
        score(tmp_path / "no_pred", _val_folder(tmp_path / "val"))


def _cli(argv: list[str]) -> int:
    from twins_tasks.cli import postprocess

    parser = argparse.ArgumentParser(prog="twins")
    postprocess.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prints_the_reference_line_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _write_preds(tmp_path / "pred")
    val = _val_folder(tmp_path / "val")
    assert (
        _cli(["postprocess", "--pred", str(pred), "--input_path", str(val), "--json", str(tmp_path / "acc.json")]) == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "Accuracy of the network on the 10 val images: 70.0%",
        "Top-5 accuracy of the network on the 10 val images: 90.0%",
    ]
    record = json.loads((tmp_path / "acc.json").read_text())
    assert record["top1"] == 70.0 and record["n_total"] == 10 and record["complete"] is True


def test_cli_exit_codes_with_missing_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _write_preds(tmp_path / "pred", skip=(_stem(10),))
    val = _val_folder(tmp_path / "val")
    assert _cli(["postprocess", "--pred", str(pred), "--input_path", str(val)]) == 0
    assert "Missing outputs (counted as wrong): 1: ILSVRC2012_val_00000010" in capsys.readouterr().out
    assert _cli(["postprocess", "--pred", str(pred), "--input_path", str(val), "--strict"]) == 1
    assert "--strict: 1 missing and 0 unreadable outputs" in capsys.readouterr().err
    (pred.parent / "complete").mkdir()
    assert (
        _cli(
            ["postprocess", "--pred", str(_write_preds(pred.parent / "complete")), "--input_path", str(val), "--strict"]
        )
        == 0
    )


def test_outputs_in_two_formats_are_refused_naming_them(tmp_path: Path) -> None:
    pred = _write_preds(tmp_path / "pred", "TXT")
    stale = output_path(pred, _stem(3), 0, "BIN")  # an earlier --outfmt BIN run into the same folder
    write_output(stale, np.zeros(1000, dtype=np.float32), "BIN")
    with pytest.raises(InputError) as info:
        score(pred, _val_folder(tmp_path / "val"))
    message = str(info.value)
    assert f"1 image(s) have outputs in more than one format in {pred}" in message
    assert f"{_stem(3)}_0.bin and {_stem(3)}_0.txt" in message
