"""make-sample: a deterministic generated dataset in ImageNet val layout, with ImageNet's odd files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twins_tasks import cli
from twins_tasks.errors import InputError
from twins_tasks.labels import imagenet_wnids
from twins_tasks.sample import SAMPLE_MARKER, is_generated, make_sample


@pytest.fixture
def run_cli():
    """The real `twins` entry point (every step's subcommand registered), returning its exit code."""
    return cli.main


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_names(tmp_path):
    paths = make_sample(tmp_path, classes=4, per_class=3, seed=1)
    assert len(paths) == 12 and paths == sorted(paths)
    wnids = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(wnids) == 4 and all(w in imagenet_wnids() for w in wnids)
    assert {p.parent.name for p in paths} == set(wnids)
    for wnid in wnids:
        assert len(list((tmp_path / wnid).iterdir())) == 3
    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", p.name) for p in paths)
    # Numbered globally 1..N with no stem repeated across classes.
    assert sorted(int(p.stem.rsplit("_", 1)[1]) for p in paths) == list(range(1, 13))
    # Atomic writes leave no temp files behind; the one dot file is the marker that says "generated".
    assert [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")] == [SAMPLE_MARKER]
    assert is_generated(tmp_path) and not is_generated(tmp_path / wnids[0])
    marker = json.loads((tmp_path / SAMPLE_MARKER).read_text())
    assert marker["seed"] == 1 and marker["classes"] == 4 and "NOT ImageNet" in marker["note"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    make_sample(tmp_path / "a", classes=3, per_class=2, seed=7)
    make_sample(tmp_path / "b", classes=3, per_class=2, seed=7)
    make_sample(tmp_path / "c", classes=3, per_class=2, seed=8)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert a != c and set(a.values()).isdisjoint(c.values())


def test_worker_processes_write_the_same_bytes(tmp_path):
    """Each picture has its own random stream: how many processes write them changes nothing."""
    one = make_sample(tmp_path / "one", classes=3, per_class=4, seed=11, workers=1)
    two = make_sample(tmp_path / "two", classes=3, per_class=4, seed=11, workers=2)
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")


def test_workers_start_clean_while_another_thread_holds_a_lock(tmp_path):
    """A plain fork copies other threads' locks as they are; with another thread running, the workers come from
    a forkserver instead, so a lock held elsewhere in this process cannot hang them (as one did in pytest)."""
    import threading

    from twins_tasks.preprocess.workers import worker_context

    if threading.active_count() == 1:  # (an earlier test may have left threads in this process)
        assert worker_context("twins_tasks.sample").get_start_method() == "fork"  # the cheap start
    held, release = threading.Lock(), threading.Event()

    def hold() -> None:
        with held:
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert worker_context("twins_tasks.sample").get_start_method() == "forkserver"
        one = make_sample(tmp_path / "one", classes=2, per_class=3, seed=5, workers=1)
        two = make_sample(tmp_path / "two", classes=2, per_class=3, seed=5, workers=2)
        assert _tree(tmp_path / "one") == _tree(tmp_path / "two") and len(one) == len(two) == 6
    finally:
        release.set()
        holder.join()


def test_special_files_and_varied_sizes(tmp_path):
    paths = make_sample(tmp_path, classes=3, per_class=3, seed=0)
    kinds = []
    sizes = set()
    for path in paths:
        with Image.open(path) as image:
            kinds.append((image.format, image.mode))
            sizes.add(image.size)
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        assert pixels.std() > 10, f"{path} is nearly flat"
        # Neighbouring pixels differ (noise, edges): resampling has something to get right.
        assert np.abs(np.diff(pixels, axis=1)).mean() > 1.0
    assert ("JPEG", "L") in kinds
    assert ("JPEG", "CMYK") in kinds
    assert ("PNG", "RGB") in kinds  # under a .JPEG name
    assert all(p.suffix == ".JPEG" for p in paths)
    assert any(w < 256 and h < 256 for w, h in sizes), "no image small enough to be upscaled"
    assert any(h > w for w, h in sizes), "no portrait image"
    assert any(w > h for w, h in sizes)
    assert len(sizes) >= 6
    assert all(120 <= side <= 600 for size in sizes for side in size)


def test_special_files_reach_different_classes(tmp_path):
    """The odd formats come first in round-robin order, so `preprocess --limit 3` still meets all three."""
    paths = make_sample(tmp_path, classes=3, per_class=2, seed=3)
    firsts = [sorted(p for p in paths if p.parent.name == wnid)[0] for wnid in sorted({p.parent.name for p in paths})]
    formats = []
    for path in firsts:
        with Image.open(path) as image:
            formats.append((image.format, image.mode))
    assert formats == [("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGB")]


def test_image_size_option(tmp_path):
    paths = make_sample(tmp_path, classes=2, per_class=5, seed=0, image_size=(500, 375))
    sizes = [Image.open(p).size for p in paths]
    assert sum(size == (500, 375) for size in sizes) == len(paths) - 2  # all but the small and portrait ones


def test_bad_counts_rejected(tmp_path):
    with pytest.raises(InputError, match="--classes"):
        make_sample(tmp_path, classes=0, per_class=3)


def test_cli(tmp_path, run_cli, capsys):
    out = tmp_path / "val"
    assert run_cli(["make-sample", "--out", str(out), "--classes", "2", "--per-class", "2", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert "NOT ImageNet" in printed and "4 pictures" in printed
    assert len(list(out.rglob("*.JPEG"))) == 4
    assert _tree(out) == _tree(Path(make_sample(tmp_path / "again", 2, 2, seed=5)[0]).parent.parent)
    assert run_cli(["make-sample", "--out", str(out), "--classes", "0", "--per-class", "2"]) == 2  # bad input
    assert "--classes" in capsys.readouterr().err
