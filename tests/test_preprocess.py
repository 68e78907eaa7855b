"""preprocess: the recipe's transform (equal to torchvision's), the bins, the manifest, reruns and bad files."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twins_tasks import cli
from twins_tasks.constants import BIN_BYTES, MEAN, STD
from twins_tasks.errors import InputError, TwinsError
from twins_tasks.labels import IMAGENET, imagenet_wnids
from twins_tasks.preprocess import transform as transform_module
from twins_tasks.preprocess import workers as workers_module
from twins_tasks.preprocess.bins import INDEX_NAME, STAMPS_NAME, preprocess
from twins_tasks.preprocess.dataset import list_dataset
from twins_tasks.preprocess.manifest import CLASSES_NAME, MANIFEST_NAME, read_manifest
from twins_tasks.preprocess.transform import transform_image, transform_rgb
from twins_tasks.sample import make_sample, synthetic_photo


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """3 classes x 3 generated images: gray, CMYK, PNG-as-JPEG, small, portrait and ordinary photos."""
    root = tmp_path_factory.mktemp("sample") / "val"
    make_sample(root, classes=3, per_class=3, seed=0)
    return root


@pytest.fixture(scope="module")
def torchvision_transform():
    """The reference recipe's transform, straight from torchvision."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=MEAN, std=STD),
        ]
    )


@pytest.fixture
def run_cli():
    """The real `twins` entry point (every step's subcommand registered), returning its exit code."""
    return cli.main


def _reference(transform, path: Path) -> np.ndarray:
    with open(path, "rb") as fh:  # torchvision's pil_loader
        image = Image.open(fh).convert("RGB")
    return transform(image).numpy()


def _bins(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}


# ------------------------------------------------------------------------------------------ the transform


def test_transform_equals_torchvision_on_every_kind_of_sample(sample, torchvision_transform):
    seen = set()
    for path in sorted(sample.rglob("*.JPEG")):
        with Image.open(path) as image:
            w, h = image.size
            seen.add(image.format if image.format == "PNG" else image.mode)
            seen.update({"small"} if w < 256 and h < 256 else set())
            seen.update({"portrait"} if h > w else set())
        ours = transform_image(path)
        assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, _reference(torchvision_transform, path), rtol=0, atol=1e-5, err_msg=str(path))
    assert {"L", "CMYK", "PNG", "RGB", "small", "portrait"} <= seen


@pytest.mark.parametrize(
    "size",
    [
        (522, 512),  # long side 261: crop offset 18.5, torchvision rounds half to even (18)
        (512, 534),  # portrait, offset 21.5 -> 22
        (256, 256),  # already the size: no resize at all
        (257, 256),
        (300, 100),  # upscaled 2.56x, wide: int() truncation of the long side (768)
        (131, 397),  # upscaled, tall, odd sides
        (600, 599),
        (333, 250),  # long side 340.99: truncated to 340, not rounded
    ],
)
def test_transform_equals_torchvision_on_awkward_sizes(tmp_path, torchvision_transform, size):
    path = tmp_path / "x.JPEG"
    synthetic_photo(*size, seed=sum(size)).save(path, "JPEG", quality=90)
    np.testing.assert_allclose(transform_image(path), _reference(torchvision_transform, path), rtol=0, atol=1e-5)


def test_transform_is_not_trivial(sample):
    """Normalised values span the expected range: a zero or constant output would fail here."""
    array = transform_image(next(sample.rglob("*.JPEG")))
    assert -2.2 < array.min() < 0 < array.max() < 2.7
    assert array.std() > 0.1


# ------------------------------------------------------------------------- images too elongated to resize whole


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def bound(monkeypatch):
    """Set the resize bound to ``pixels`` and fail the test if Pillow is asked for a larger resize."""

    def set_bound(pixels: int) -> None:
        transform_module._passes_match_pillow()  # its own probe resizes, made (and cached) before the patch
        monkeypatch.setattr(transform_module, "MAX_RESIZED_PIXELS", pixels)
        real = Image.Image.resize

        def resize(self, size, *args, **kwargs):
            assert size[0] * size[1] <= pixels, f"resized whole to {size}"
            return real(self, size, *args, **kwargs)

        monkeypatch.setattr(Image.Image, "resize", resize)

    return set_bound


@pytest.mark.parametrize("size", [(1, 600), (1, 257), (600, 1), (1000, 1), (1, 333)])
def test_thin_image_crop_without_the_whole_resize_is_bit_identical(size, bound):
    """Under the bound the whole resize is made (as ever); over it, only the crop: the same bits."""
    image = _noise(*size, seed=sum(size))
    whole = transform_rgb(image)
    bound(1 << 24)  # these resizes are 16.8M to 65M pixels
    np.testing.assert_array_equal(transform_rgb(image), whole)


def test_thin_image_over_the_bound_equals_torchvision(tmp_path, torchvision_transform, bound):
    path = tmp_path / "thin.png"
    _noise(1, 700, seed=3).save(path)
    expected = _reference(torchvision_transform, path)  # torchvision makes the whole 256x179200 resize
    bound(1 << 20)
    np.testing.assert_allclose(transform_image(path), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(2, 600), (600, 2), (300, 20000), (5, 4000)])
def test_elongated_image_whose_crop_depends_on_the_pass_order_is_refused_over_the_bound(size, tmp_path, monkeypatch):
    path = tmp_path / "long.png"
    _noise(*size).save(path)
    assert transform_image(path).shape == (3, 224, 224)  # under the bound: the whole resize, as ever
    monkeypatch.setattr(transform_module, "MAX_RESIZED_PIXELS", 1000)
    with pytest.raises(InputError) as info:
        transform_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: a {size[0]}×{size[1]} image: Resize(256) would make it ")
    assert "over the bound of 1,000), and its center crop depends on the order of Pillow's resampling passes" in message
    assert "--skip-bad" in message


def test_refused_when_the_passes_do_not_match_this_pillow(tmp_path, monkeypatch):
    path = tmp_path / "thin.png"
    _noise(1, 6000).save(path)
    monkeypatch.setattr(transform_module, "_passes_match_pillow", lambda: False)
    with pytest.raises(InputError, match=r"a 1×6000 image: .* cannot be computed exactly without that here"):
        transform_image(path)


def test_an_image_refused_as_too_elongated_is_skipped_and_recorded_with_skip_bad(sample, tmp_path):
    root = _copy_sample(sample, tmp_path)
    wide = next(p for p in root.iterdir() if p.is_dir()) / "ILSVRC2012_val_09999998.png"
    _noise(30000, 3).save(wide)  # resized whole: 2,560,000 x 256 (655 M pixels)
    with pytest.raises(
        InputError, match=rf"1 of 10 images cannot be decoded .*\n  {wide}: InputError: .*30000×3 image"
    ):
        preprocess(root, tmp_path / "bins", workers=2)
    result = preprocess(root, tmp_path / "bins", workers=2, skip_bad=True)
    assert [source for source, _ in result.bad] == [str(wide)]
    row = {r.stem: r for r in read_manifest(tmp_path / "bins")}[wide.stem]
    assert row.status == "skipped" and "over the bound of 67,108,864" in row.reason


# A memory ceiling for one preprocess run in a child process: the whole 256x1,536,000 resize of a 108-byte PNG
# needs 1.6 GB, the 1x60000 one 16 GB; the crops need next to nothing.
_UNDER_A_CEILING = """
import json, resource, sys
from pathlib import Path
from twins_tasks.errors import TwinsError
from twins_tasks.preprocess import transform
from twins_tasks.preprocess.bins import preprocess

root, out, mode = sys.argv[1:]
if mode == "whole":  # every resize made whole, as before the crop
    transform.MAX_RESIZED_PIXELS = 1 << 62
size = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (768 << 20),) * 2)
try:
    print(json.dumps({"written": preprocess(root, out, workers=2).num_written}))
except TwinsError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_thin_pngs_preprocess_under_a_memory_ceiling(tmp_path):
    root = tmp_path / "val"
    for wnid, height in (("n01440764", 6000), ("n01443537", 60000)):
        (root / wnid).mkdir(parents=True)
        Image.new("RGB", (1, height), (200, 120, 40)).save(root / wnid / f"thin_{height}.png")
    assert (root / "n01440764" / "thin_6000.png").stat().st_size < 200  # 108 bytes

    def run(mode: str) -> dict:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OPENBLAS_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-c", _UNDER_A_CEILING, str(root), str(tmp_path / mode), mode],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert run("crop") == {"written": 2}
    flat = transform_rgb(Image.new("RGB", (300, 300), (200, 120, 40)))  # a flat picture stays flat when resized
    for height in (6000, 60000):
        written = np.fromfile(tmp_path / "crop" / f"thin_{height}.bin", dtype=np.float32).reshape(3, 224, 224)
        np.testing.assert_array_equal(written, flat)
    # The whole resize (the code before) runs out of memory there: the error names the image, not "MemoryError: ".
    error = run("whole")["error"]
    assert error.startswith(f"out of memory transforming {root}/"), error
    assert "thin_6000.png (a 1×6000 RGB image)" in error or "thin_60000.png (a 1×60000 RGB image)" in error
    assert "fewer --workers" in error


# ------------------------------------------------------------------------------------------ outputs


def test_bins_manifest_and_classes(sample, tmp_path):
    out = tmp_path / "bins"
    result = preprocess(sample, out, workers=1)
    assert (result.num_images, result.num_written, result.num_reused, result.bad) == (9, 9, 0, [])
    assert result.to_dict()["bin_path"] == str(out)

    classes = sorted(p.name for p in sample.iterdir() if p.is_dir())
    images = sorted(sample.rglob("*.JPEG"))
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(f"{p.stem}.bin" for p in images)
    for image in images:
        data = out / f"{image.stem}.bin"
        assert data.stat().st_size == BIN_BYTES == 602_112
        # Raw float32 CHW, no header: exactly transform_image's array.
        np.testing.assert_array_equal(np.fromfile(data, dtype=np.float32).reshape(3, 224, 224), transform_image(image))

    assert (out / CLASSES_NAME).read_text().splitlines() == classes
    rows = read_manifest(out)
    assert rows == read_manifest(out / MANIFEST_NAME)
    assert [Path(r.source) for r in rows] == images  # dataset order: class folder, then file name
    for row in rows:
        source = Path(row.source)
        assert row.stem == source.stem and row.wnid == source.parent.name
        # make-sample names folders by real ImageNet-1k wnids: the label is the wnid's ImageNet index.
        assert row.label == imagenet_wnids().index(row.wnid)
        assert (row.status, row.reason) == ("ok", "")
    header = (out / MANIFEST_NAME).read_text().splitlines()[0]
    assert header == "stem,source,label,wnid,status,reason"
    # Every file was renamed into place: no temp file is left. (The stat index holds only images older than a
    # few seconds, so it is absent when the sample was made just now.)
    assert {p.name for p in out.iterdir() if not p.name.endswith(".bin")} - {INDEX_NAME} == {
        STAMPS_NAME,
        CLASSES_NAME,
        MANIFEST_NAME,
    }


def test_workers_give_identical_bytes(sample, tmp_path):
    one = preprocess(sample, tmp_path / "one", workers=1)
    two = preprocess(sample, tmp_path / "two", workers=2)
    assert one.num_written == two.num_written == 9
    assert _bins(tmp_path / "one") == _bins(tmp_path / "two")
    assert (tmp_path / "one" / MANIFEST_NAME).read_text() == (tmp_path / "two" / MANIFEST_NAME).read_text()


def test_a_pool_worker_killed_by_the_oom_killer_fails_the_step_instead_of_hanging_it():
    from tests.doubles.helpers import die_on

    # Pool replaces a SIGKILLed worker, but the tasks it held never come back: imap waited for them for ever.
    outcome: list[BaseException] = []
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # fresh interpreters: pytest runs other threads

        def consume() -> None:
            try:
                assert sorted(workers_module.watched_map(pool, die_on, list(range(4, 11)), 3, "preprocess")) == [
                    *range(4, 11)
                ]  # chunks of 3, every result once
                list(workers_module.watched_map(pool, die_on, list(range(8)), 2, "preprocess"))
            except BaseException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=consume, daemon=True)
        waiter.start()
        waiter.join(60)
        assert not waiter.is_alive(), "the pool still waits for the killed worker's task"
    (error,) = outcome
    assert isinstance(error, TwinsError) and re.fullmatch(
        r"a preprocess worker process \(pid \d+\) died \(killed by SIGKILL, usually the kernel's out-of-memory "
        r"killer\) with tasks that will never finish: give the task more memory or run fewer --workers, then run it "
        r"again \(finished files are kept\)",
        str(error),
    ), error


def test_rerun_keeps_complete_bins_and_redoes_short_ones(sample, tmp_path, caplog):
    out = tmp_path / "bins"
    preprocess(sample, out, workers=1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    short = sorted(out.glob("*.bin"))[0]
    short.write_bytes(b"\0" * 100)  # what a non-atomic writer killed mid-file would leave
    expected = transform_image(next(sample.rglob(f"{short.stem}.JPEG")))
    with caplog.at_level("INFO", logger="twins_tasks.preprocess"):
        result = preprocess(sample, out, workers=2)
    assert (result.num_written, result.num_reused) == (1, 8)
    assert "8 already complete" in caplog.text
    np.testing.assert_array_equal(np.fromfile(short, dtype=np.float32).reshape(3, 224, 224), expected)
    for path in out.glob("*.bin"):
        if path != short:
            assert path.stat().st_mtime_ns == mtimes[path.name], f"{path.name} was rewritten"


def test_limit_takes_round_robin_subset(sample, tmp_path):
    classes, everything = list_dataset(sample)
    by_class = [[item for item in everything if item.wnid == wnid] for wnid in classes]
    _, four = list_dataset(sample, limit=4)
    assert four == [by_class[0][0], by_class[0][1], by_class[1][0], by_class[2][0]]
    assert list_dataset(sample, limit=100)[1] == everything

    result = preprocess(sample, tmp_path / "bins", workers=1, limit=4)
    assert result.num_images == result.num_written == 4
    assert sorted(p.stem for p in (tmp_path / "bins").glob("*.bin")) == sorted(i.stem for i in four)
    rows = read_manifest(tmp_path / "bins")
    assert [r.stem for r in rows] == [i.stem for i in four]
    index = imagenet_wnids().index
    assert [r.label for r in rows] == [index(classes[0]), index(classes[0]), index(classes[1]), index(classes[2])]
    # All classes are still listed: labels keep their full-dataset meaning.
    assert (tmp_path / "bins" / CLASSES_NAME).read_text().splitlines() == classes
    with pytest.raises(InputError, match="--limit"):
        list_dataset(sample, limit=0)


def test_bins_from_an_earlier_larger_run_are_reported(sample, tmp_path, caplog):
    preprocess(sample, tmp_path / "bins", workers=1)
    with caplog.at_level("WARNING", logger="twins_tasks.preprocess"):
        preprocess(sample, tmp_path / "bins", workers=1, limit=3)
    assert "6 .bin file(s) that are not in this run's manifest" in caplog.text
    assert len(read_manifest(tmp_path / "bins")) == 3


def test_dataset_listing_rules(tmp_path):
    root = tmp_path / "val"
    for wnid in ("n02000000", "n01000000"):
        (root / wnid).mkdir(parents=True)
    synthetic_photo(300, 260, seed=1).save(root / "n01000000" / "b.jpg", "JPEG")
    synthetic_photo(300, 260, seed=2).save(root / "n01000000" / "a.Png", "PNG")
    synthetic_photo(300, 260, seed=3).save(root / "n02000000" / "c.JPEG", "JPEG")
    (root / "n02000000" / "notes.txt").write_text("not an image extension: ignored, as ImageFolder does")
    (root / "n02000000" / "._c.JPEG").write_bytes(b"macOS metadata, hidden: ignored")
    (root / "README.JPEG").write_bytes(b"outside any class folder: ignored")
    classes, items = list_dataset(root)
    assert classes == ["n01000000", "n02000000"]
    assert [(i.stem, i.label, i.wnid) for i in items] == [
        ("a", 0, "n01000000"),
        ("b", 0, "n01000000"),
        ("c", 1, "n02000000"),
    ]


def test_duplicate_stems_are_an_error(tmp_path):
    root = tmp_path / "val"
    for wnid in ("n01000000", "n02000000"):
        (root / wnid).mkdir(parents=True)
        synthetic_photo(200, 200, seed=1).save(root / wnid / "ILSVRC2012_val_00000001.JPEG", "JPEG")
    with pytest.raises(InputError) as info:
        preprocess(root, tmp_path / "bins", workers=1)
    message = str(info.value)
    assert str(root / "n01000000" / "ILSVRC2012_val_00000001.JPEG") in message
    assert str(root / "n02000000" / "ILSVRC2012_val_00000001.JPEG") in message
    assert not (tmp_path / "bins").exists()


def test_missing_root_empty_class_and_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        list_dataset(tmp_path / "nope")
    (tmp_path / "val" / "n01000000").mkdir(parents=True)
    with pytest.raises(InputError, match="n01000000"):
        list_dataset(tmp_path / "val")
    with pytest.raises(InputError, match="twins preprocess"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match=f"--bin_path {tmp_path / 'not_yet'}`"):
        read_manifest(tmp_path / "not_yet")


# ------------------------------------------------------------------------------------------ bad images


@pytest.fixture
def sample_with_bad_files(sample, tmp_path) -> tuple[Path, list[Path]]:
    root = tmp_path / "val"
    shutil.copytree(sample, root)
    wnids = sorted(p.name for p in root.iterdir() if p.is_dir())
    good = sorted((root / wnids[0]).glob("*.JPEG"))[-1].read_bytes()
    bad = [root / wnids[0] / "truncated_1.JPEG", root / wnids[1] / "empty_2.JPEG", root / wnids[2] / "text_3.JPEG"]
    bad[0].write_bytes(good[: len(good) // 2])
    bad[1].write_bytes(b"")
    bad[2].write_text("this is not a picture\n")
    return root, bad


def test_bad_files_fail_the_cli_after_writing_the_rest(sample_with_bad_files, tmp_path, run_cli, capsys):
    root, bad = sample_with_bad_files
    out = tmp_path / "bins"
    code = run_cli(["preprocess", "--root_path", str(root), "--bin_path", str(out), "--workers", "2"])
    assert code != 0
    err = capsys.readouterr().err
    for path in bad:
        assert str(path) in err
    assert "truncated" in err.lower()  # the reason is given, not only the name
    assert "--skip-bad" in err
    # Every decodable image was still written; no manifest claims a complete run.
    assert len(list(out.glob("*.bin"))) == 9
    assert not (out / MANIFEST_NAME).exists()


def test_bad_files_raise_input_error_listing_each(sample_with_bad_files, tmp_path):
    root, bad = sample_with_bad_files
    with pytest.raises(InputError) as info:
        preprocess(root, tmp_path / "bins", workers=1)
    assert all(str(path) in str(info.value) for path in bad)


def test_skip_bad_records_them_in_the_manifest(sample_with_bad_files, tmp_path, run_cli, capsys):
    root, bad = sample_with_bad_files
    out = tmp_path / "bins"
    assert run_cli(["preprocess", "--root_path", str(root), "--bin_path", str(out), "--skip-bad"]) == 0
    assert "3 skipped" in capsys.readouterr().out
    rows = {Path(r.source): r for r in read_manifest(out)}
    assert len(rows) == 12
    for path in bad:
        assert rows[path].status == "skipped" and rows[path].reason
        assert not (out / f"{path.stem}.bin").exists()
    assert sum(r.status == "ok" for r in rows.values()) == 9 == len(list(out.glob("*.bin")))


def test_truncated_jpeg_fails_only_on_decode(sample_with_bad_files):
    """PIL opens lazily: the header of a truncated JPEG reads fine, so the decode must be forced."""
    _, bad = sample_with_bad_files
    with Image.open(bad[0]) as image:
        assert image.size[0] > 0
    with pytest.raises(OSError, match="truncated"):
        transform_image(bad[0])


def test_cli_summary_and_rerun(sample, tmp_path, run_cli, capsys):
    argv = ["preprocess", "--root_path", str(sample), "--bin_path", str(tmp_path / "bins"), "--workers", "1"]
    assert run_cli(argv + ["--limit", "5"]) == 0
    assert "5 images" in capsys.readouterr().out
    assert run_cli(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "9 images" in line and "4 written" in line and "5 kept" in line
    assert run_cli(argv + ["--workers", "0"]) == 2  # bad input


# ------------------------------------------------------------------------------------------ labels


def _tree(root: Path, folders: list[str]) -> None:
    for i, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        synthetic_photo(60, 50, seed=i).save(root / folder / f"img{i}.JPEG", "JPEG")


def test_wnid_folders_get_their_imagenet_index_even_for_a_class_subset(tmp_path):
    # Two classes of ImageNet: by position they would be 0 and 1, which scores 0% against a real model.
    _tree(tmp_path / "val", ["n01440764", "n15075141"])
    classes, items = list_dataset(tmp_path / "val")
    assert [(i.wnid, i.label) for i in items] == [("n01440764", 0), ("n15075141", 999)]
    result = preprocess(tmp_path / "val", tmp_path / "bins", workers=1)
    assert result.label_scheme == IMAGENET
    assert [r.label for r in read_manifest(tmp_path / "bins")] == [0, 999]


def test_non_wnid_folders_get_positions_and_the_output_says_so(tmp_path, caplog, capsys):
    _tree(tmp_path / "val", ["cats", "dogs"])
    assert [i.label for i in list_dataset(tmp_path / "val")[1]] == [0, 1]
    with caplog.at_level("WARNING", logger="twins_tasks.preprocess"):
        assert cli.main(["preprocess", "--root_path", str(tmp_path / "val"), "--bin_path", str(tmp_path / "b")]) == 0
    assert "are not ImageNet wnids: labels are their positions" in caplog.text
    assert "labels: positions among the sorted class folders" in capsys.readouterr().out


def test_a_mix_of_wnids_and_other_folders_is_refused_naming_the_odd_ones(tmp_path):
    _tree(tmp_path / "val", ["n01440764", "n01443537", "extra", "n09999999"])
    with pytest.raises(InputError) as info:
        list_dataset(tmp_path / "val")
    message = str(info.value)
    assert "mixes 2 ImageNet class folder(s)" in message and "extra, n09999999" in message
    assert "look like wnids but are not among ImageNet-1k's 1,000 classes, e.g. n09999999" in message


# ------------------------------------------------------------------------------------------ changed sources


def _copy_sample(sample: Path, tmp_path: Path) -> Path:
    root = tmp_path / "val"
    shutil.copytree(sample, root)
    return root


def test_rerun_redoes_bins_whose_source_image_changed(sample, tmp_path, caplog):
    root = _copy_sample(sample, tmp_path)
    out = tmp_path / "bins"
    preprocess(root, out, workers=1)
    source = sorted(root.rglob("*.JPEG"))[4]
    synthetic_photo(333, 281, seed=99).save(source, "JPEG")  # same name, another picture
    with caplog.at_level("WARNING", logger="twins_tasks.preprocess"):
        result = preprocess(root, out, workers=1)
    assert (result.num_written, result.num_reused) == (1, 8)
    assert "1 source image(s) changed" in caplog.text
    written = np.fromfile(out / f"{source.stem}.bin", dtype=np.float32).reshape(3, 224, 224)
    np.testing.assert_array_equal(written, transform_image(source))
    # Unchanged again: nothing to redo.
    assert preprocess(root, out, workers=1).num_reused == 9


def test_source_changed_to_an_empty_file_is_a_bad_image_and_loses_its_old_bin(sample, tmp_path):
    root = _copy_sample(sample, tmp_path)
    out = tmp_path / "bins"
    preprocess(root, out, workers=1)
    source = sorted(root.rglob("*.JPEG"))[2]
    source.write_bytes(b"")
    with pytest.raises(InputError, match=rf"1 of 9 images cannot be decoded .*\n  {source}: UnidentifiedImageError"):
        preprocess(root, out, workers=1)
    assert not (out / f"{source.stem}.bin").exists()  # inference must not score the old picture
    result = preprocess(root, out, workers=1, skip_bad=True)
    assert [s for s, _ in result.bad] == [str(source)]
    assert {r.stem: r.status for r in read_manifest(out)}[source.stem] == "skipped"
    assert not (out / f"{source.stem}.bin").exists()


@pytest.mark.parametrize("stamps", ["none", "size and mtime"])
def test_bins_without_stamps_are_redone_when_their_source_is_newer(sample, tmp_path, stamps):
    root = _copy_sample(sample, tmp_path)
    out = tmp_path / "bins"
    preprocess(root, out, workers=1)
    # bins written by an older twins_tasks: no stamps, or stamps of size and mtime (stem, source, size, mtime_ns)
    (out / STAMPS_NAME).unlink()
    if stamps == "size and mtime":
        (out / STAMPS_NAME).write_text("".join(f"{p.stem},{p},1,2\n" for p in root.rglob("*.JPEG")))
    source = sorted(root.rglob("*.JPEG"))[0]
    synthetic_photo(300, 300, seed=7).save(source, "JPEG")
    os.utime(source, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    result = preprocess(root, out, workers=1)
    assert (result.num_written, result.num_reused) == (1, 8)


def test_bin_path_that_is_a_file_fails_before_any_work(sample, tmp_path):
    target = tmp_path / "bins"
    target.write_text("not a folder")
    with pytest.raises(InputError, match=f"--bin_path {target} is a file"):
        preprocess(sample, target, workers=1)


# ------------------------------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmpfs):
    """A 2 MiB tmpfs (room for 3 bins), or a skip saying why there is none."""
    return tmpfs("2m", "small")


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_says_no_space_left_and_leaves_no_temp_files(sample, small_disk, workers):
    out = small_disk / "bins"
    with pytest.raises(InputError) as info:
        preprocess(sample, out, workers=workers)
    message = str(info.value)
    assert message.startswith(f"no space left on {out} (No space left on device;")
    assert "pass another --bin_path" in message
    # the image hashes' stat cache (written before any bin) stays valid and is kept
    leftovers = [p.name for p in out.iterdir() if not p.name.endswith(".bin") and p.name != INDEX_NAME]
    assert leftovers == [], leftovers  # no temp file, no manifest
    assert all(p.stat().st_size == BIN_BYTES for p in out.glob("*.bin"))  # only whole bins


def test_disk_full_from_the_cli_is_one_error_line(sample, small_disk, capsys):
    assert (
        cli.main(["preprocess", "--root_path", str(sample), "--bin_path", str(small_disk / "b"), "--workers", "1"])
        == 2  # bad input (a full disk): exit code 2
    )
    err = capsys.readouterr().err
    assert "twins preprocess: error: no space left on" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ dataset walking


def test_dangling_image_link_is_a_bad_image_and_does_not_crash_the_fingerprint(sample, tmp_path):
    from twins_tasks.preprocess.inputs import prepare_inputs

    root = _copy_sample(sample, tmp_path)
    link = next(p for p in root.iterdir() if p.is_dir()) / "ILSVRC2012_val_09999999.JPEG"
    link.symlink_to(tmp_path / "gone.JPEG")
    with pytest.raises(InputError, match=rf"{link}: dangling symlink or symlink loop \(-> {tmp_path}/gone.JPEG\)"):
        prepare_inputs(root, tmp_path / "cache", workers=1)
    record = prepare_inputs(root, tmp_path / "cache", workers=1, skip_bad=True)
    assert [source for source, _ in record["bad"]] == [str(link)]
    assert record["num_images"] == 10


def test_dangling_image_link_is_refused_before_any_preprocessing(sample, tmp_path, monkeypatch):
    from twins_tasks.preprocess.inputs import prepare_inputs

    root = _copy_sample(sample, tmp_path)
    link = next(p for p in root.iterdir() if p.is_dir()) / "ILSVRC2012_val_09999999.JPEG"
    link.symlink_to(tmp_path / "gone.JPEG")
    monkeypatch.setattr(workers_module, "transform_image", lambda path: pytest.fail(f"decoded {path}"))
    expected = (
        rf"1 of 10 images cannot be read \(nothing was preprocessed\):\n  {link}: dangling symlink or symlink loop"
    )
    with pytest.raises(InputError, match=expected):
        preprocess(root, tmp_path / "bins", workers=1)
    with pytest.raises(InputError, match=expected):
        prepare_inputs(root, tmp_path / "cache", workers=1)
    assert list(tmp_path.rglob("*.bin")) == []


def test_dangling_image_link_with_skip_bad_is_named_and_recorded_as_skipped(sample, tmp_path, run_cli, caplog):
    from twins_tasks.preprocess.inputs import skipped_fields

    root = _copy_sample(sample, tmp_path)
    link = next(p for p in root.iterdir() if p.is_dir()) / "ILSVRC2012_val_09999999.JPEG"
    link.symlink_to(tmp_path / "gone.JPEG")
    record = tmp_path / "record.json"
    args = ["prepare-inputs", "--root_path", str(root), "--cache-dir", str(tmp_path / "cache"), "--record", str(record)]
    with caplog.at_level("WARNING", logger="twins_tasks.preprocess"):
        assert run_cli([*args, "--skip-bad", "--workers", "1"]) == 0
    assert f"Cannot read {link}: dangling symlink or symlink loop (-> {tmp_path}/gone.JPEG)" in caplog.text
    inputs = json.loads(record.read_text())
    assert inputs["num_images"] == 10 and inputs["num_written"] == 9
    assert skipped_fields(inputs) == {"num_skipped": 1, "skipped_images": [f"{link.parent.name}/{link.name}"]}
    row = {r.stem: r for r in read_manifest(inputs["bin_path"])}[link.stem]
    assert row.status == "skipped" and "dangling symlink" in row.reason


def test_image_link_to_itself_is_a_bad_image(sample, tmp_path):
    from twins_tasks.preprocess.inputs import prepare_inputs

    root = _copy_sample(sample, tmp_path)
    link = next(p for p in root.iterdir() if p.is_dir()) / "ILSVRC2012_val_09999999.JPEG"
    link.symlink_to(link.name)  # a loop: the link points at itself
    record = prepare_inputs(root, tmp_path / "cache", workers=1, skip_bad=True)
    assert record["bad"][0][0] == str(link) and "symlink loop" in record["bad"][0][1]


def test_folder_symlink_loop_is_refused_naming_the_link(sample, tmp_path):
    from twins_tasks.preprocess.inputs import prepare_inputs

    root = _copy_sample(sample, tmp_path)
    loop = next(p for p in root.iterdir() if p.is_dir()) / "again"
    loop.symlink_to("..")
    for call in (
        lambda: prepare_inputs(root, tmp_path / "cache", workers=1, skip_bad=True),
        lambda: list_dataset(root),
    ):
        with pytest.raises(InputError, match=rf"symlink loop in .*: {loop} -> \.\. leads back to"):
            call()


def test_dangling_class_folder_link_is_refused(sample, tmp_path):
    root = _copy_sample(sample, tmp_path)
    (root / "n99999999").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"1 class folder link\(s\) under .* are dangling or loop: n99999999 -> "):
        list_dataset(root)


@pytest.mark.parametrize("root", ["/", "/usr", "/proc"])
def test_system_folders_are_refused_before_walking(root, tmp_path, monkeypatch):
    from twins_tasks import files
    from twins_tasks.preprocess.inputs import prepare_inputs

    def no_walk(*args, **kwargs):
        raise AssertionError("walked a system folder")

    monkeypatch.setattr(files, "walk", no_walk)
    with pytest.raises(InputError, match=rf"--root_path {root} is (the filesystem root|a system folder)"):
        prepare_inputs(root, tmp_path / "cache")
    with pytest.raises(InputError, match="not an ImageNet val folder"):
        list_dataset(root)


def test_folder_above_the_val_folder_is_refused(sample, tmp_path):
    top = tmp_path / "imagenet"
    shutil.copytree(sample, top / "val")
    shutil.copytree(sample, top / "train")
    with pytest.raises(
        InputError, match=r"is not an ImageNet-layout val folder: none of its 2 sub-folder\(s\) \(train, val\)"
    ):
        list_dataset(top)


def test_disk_full_in_the_cache_says_which_work_dir(sample, small_disk):
    from twins_tasks.preprocess.inputs import prepare_inputs

    with pytest.raises(InputError, match=rf"no space left on {small_disk}/cache/bins/\w+ .*use another --work_dir"):
        prepare_inputs(sample, small_disk / "cache", workers=1)


def test_empty_root_path_is_refused_not_the_current_folder(sample, tmp_path, run_cli, capsys, monkeypatch):
    monkeypatch.chdir(sample)  # the current folder is a valid dataset: '' must not silently mean it
    assert run_cli(["preprocess", "--root_path", "", "--bin_path", str(tmp_path / "bins")]) == 2
    assert "no dataset folder given" in capsys.readouterr().err
    record = tmp_path / "record.json"
    args = ["prepare-inputs", "--root_path", "", "--cache-dir", str(tmp_path / "cache"), "--record", str(record)]
    assert run_cli(args) == 2
    assert "no dataset folder given" in capsys.readouterr().err
    assert not record.exists() and not (tmp_path / "cache" / "bins").exists()
