"""ais_bench's file layout: input listing, output names and the three output formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twins_tasks.errors import InputError
from twins_tasks.layout import (
    check_output_stems,
    find_outputs,
    format_txt,
    list_inputs,
    load_input,
    natural_key,
    output_path,
    output_stem,
    read_output,
    write_output,
)


def test_txt_is_percent_f_single_spaces_trailing_space_newline(tmp_path: Path) -> None:
    array = np.array([[1.0, -2.5, 0.3333333, 1234.5678901]], dtype=np.float32)
    path = tmp_path / "img_0.txt"
    write_output(path, array, "TXT")
    # float32(1234.5678901) is 1234.5678710938 -> %f rounds to 6 decimals
    assert path.read_bytes() == b"1.000000 -2.500000 0.333333 1234.567871 \n"


def test_txt_writes_one_line_per_row_of_last_dim() -> None:
    array = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert format_txt(array) == "0.000000 1.000000 2.000000 \n3.000000 4.000000 5.000000 \n"


@pytest.mark.parametrize("fmt", ["TXT", "NPY", "BIN", "txt"])
def test_output_round_trip(tmp_path: Path, fmt: str) -> None:
    values = np.random.default_rng(0).standard_normal((1, 1000)).astype(np.float32)
    path = output_path(tmp_path, "ILSVRC2012_val_00000293", 0, fmt)
    assert path.name == f"ILSVRC2012_val_00000293_0.{fmt.lower()}"
    write_output(path, values, fmt)
    back = read_output(path, 1000)
    assert back.dtype == np.float32 and back.shape == (1000,)
    if fmt.upper() == "TXT":
        np.testing.assert_allclose(back, values.reshape(-1), atol=1e-6, rtol=0)  # %f: 6 decimals
    else:
        np.testing.assert_array_equal(back, values.reshape(-1))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_bin_output_is_raw_float32(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.0]], dtype=np.float32)
    write_output(tmp_path / "a_0.bin", values, "BIN")
    assert (tmp_path / "a_0.bin").read_bytes() == values.tobytes()


def test_write_output_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JSON"):
        write_output(tmp_path / "a_0.json", np.zeros((1, 3), np.float32), "JSON")


def test_read_output_checks_the_number_of_values(tmp_path: Path) -> None:
    write_output(tmp_path / "a_0.txt", np.zeros((1, 999), np.float32), "TXT")
    with pytest.raises(ValueError, match="expected 1000 values, found 999"):
        read_output(tmp_path / "a_0.txt", 1000)


def test_natural_sort_puts_img2_before_img10(tmp_path: Path) -> None:
    for name in ("img10.bin", "img2.bin", "img1.bin", "img02b.bin"):
        (tmp_path / name).write_bytes(b"\0" * 8)
    assert [p.name for p in list_inputs(tmp_path)] == ["img1.bin", "img2.bin", "img02b.bin", "img10.bin"]
    assert sorted(["a10", "a9", "b1"], key=natural_key) == ["a9", "a10", "b1"]


def test_list_inputs_takes_exactly_the_suffixes_ais_bench_takes(tmp_path: Path) -> None:
    """ais_bench lists .bin .BIN .npy .NPY only (utils.py, get_fileslist_from_dir): .Bin is not an input."""
    for name in ("a.bin", "b.BIN", "c.npy", "d.NPY", "e.txt", "f.jpeg", "manifest.csv", "g.Bin", "h.nPy"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.bin").mkdir()  # a folder with an input-like name is not an input
    assert [p.name for p in list_inputs(tmp_path)] == ["a.bin", "b.BIN", "c.npy", "d.NPY"]
    with pytest.raises(InputError, match=r"g\.Bin is not a \.bin or \.npy file \(ais_bench takes exactly "):
        list_inputs(tmp_path / "g.Bin")


def test_list_inputs_comma_separated_files_are_one_input(tmp_path: Path) -> None:
    (tmp_path / "d1").mkdir()
    for name in ("x2.bin", "x1.bin"):
        (tmp_path / "d1" / name).write_bytes(b"x")
    single = tmp_path / "z.bin"
    single.write_bytes(b"x")
    found = list_inputs(f"{tmp_path / 'd1' / 'x2.bin'},{single},{tmp_path / 'd1' / 'x1.bin'}")
    assert [p.name for p in found] == ["x2.bin", "z.bin", "x1.bin"]  # files: in the order given
    assert list_inputs([single]) == [single]
    assert [p.name for p in list_inputs(tmp_path / "d1")] == ["x1.bin", "x2.bin"]


@pytest.mark.parametrize("spec", ["{d1},{d2}", "{d1},{z}", "{z},{d1}"])
def test_comma_separated_folders_are_one_folder_per_model_input(tmp_path: Path, spec: str) -> None:
    """ais_bench reads comma-separated folders as one per model input (io_oprations.py, check_input_parameter):
    this model has one input, so a list with a folder in it is an input error, not a merge."""
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.bin").write_bytes(b"x")
    (tmp_path / "z.bin").write_bytes(b"x")
    text = spec.format(d1=tmp_path / "d1", d2=tmp_path / "d2", z=tmp_path / "z.bin")
    with pytest.raises(InputError, match=r"one folder per model input, and this model has one input"):
        list_inputs(text)


def test_output_stem_stops_at_the_first_dot_and_clashes_are_named(tmp_path: Path) -> None:
    assert output_stem("ILSVRC2012_val_00000293.bin") == "ILSVRC2012_val_00000293"
    assert output_stem(tmp_path / "img.v1.bin") == "img"
    check_output_stems(["a.bin", "b.bin", "c.v1.bin"])  # one name per stem: fine
    with pytest.raises(InputError) as err:
        check_output_stems([tmp_path / "img.v1.bin", "other.bin", tmp_path / "img.v2.npy", "img.bin"])
    assert "img.v1.bin, img.v2.npy, img.bin -> img_0.*" in str(err.value)
    assert "part before the first dot is unique" in str(err.value)


def test_fp16_bin_and_npy_outputs_read_as_float32(tmp_path: Path) -> None:
    """With atc --output_type=FP16 ais_bench writes float16 (utils.py, save_data_to_files): tofile / np.save."""
    values = np.random.default_rng(1).standard_normal((1, 1000)).astype(np.float16)
    values.tofile(tmp_path / "a_0.bin")
    np.save(tmp_path / "a_0.npy", values)
    for name in ("a_0.bin", "a_0.npy"):
        back = read_output(tmp_path / name, 1000)
        assert back.dtype == np.float32
        np.testing.assert_array_equal(back, values.reshape(-1).astype(np.float32))
    (tmp_path / "b_0.bin").write_bytes(b"\0" * 3000)
    with pytest.raises(ValueError, match=r"4000 bytes \(float32\) or 2000 bytes \(float16\), found 3000 bytes"):
        read_output(tmp_path / "b_0.bin", 1000)


def test_list_inputs_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope"):
        list_inputs(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match=r"a\.txt is not a \.bin or \.npy"):
        list_inputs(tmp_path / "a.txt")
    with pytest.raises(InputError, match="no .bin/.npy input files"):
        list_inputs(tmp_path)


def test_load_input_reads_bin_and_npy(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32)
    values.tofile(tmp_path / "a.bin")
    np.save(tmp_path / "b.npy", values.reshape(3, 4).astype(np.float64))
    np.testing.assert_array_equal(load_input(tmp_path / "a.bin"), values)
    loaded = load_input(tmp_path / "b.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)


def test_find_outputs_maps_stems_for_one_output_index(tmp_path: Path) -> None:
    for name in ("img_1_0.txt", "img_2_0.npy", "img_2_1.npy", "IMG_3_0.BIN", "notes.txt", ".img_4_0.txt.tmp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir_0.txt").mkdir()
    assert find_outputs(tmp_path) == {
        "img_1": tmp_path / "img_1_0.txt",
        "img_2": tmp_path / "img_2_0.npy",
        "IMG_3": tmp_path / "IMG_3_0.BIN",
    }
    assert find_outputs(tmp_path, index=1) == {"img_2": tmp_path / "img_2_1.npy"}
