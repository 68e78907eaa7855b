"""`twins run` end to end, as a user runs it by hand: the real twins_svt_large (seeded random weights) on 16
generated images at batch sizes 1 and 4, in a real `twins` process, results in a real SQLite database."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from twins_tasks.sample import make_sample
from twins_tasks.store import ResultsStore

TWINS = str(Path(sys.executable).with_name("twins"))  # the console script pip installed beside this Python


def _run(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    argv = [
        TWINS,
        "run",
        "--root_path",
        str(tmp_path / "val"),
        "--random-init",
        "--batch-sizes",
        "1,4",
        "--loop",
        "2",
        "--reference-images",
        "4",
        "--work-dir",
        str(tmp_path / "work"),
        "--run-name",
        name,
        "--results-url",
        f"sqlite:///{tmp_path / 'results.db'}",
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.model
def test_twins_run_end_to_end(tmp_path):
    make_sample(tmp_path / "val", classes=4, per_class=4, seed=3)

    first = _run(tmp_path, "by-hand-1", "--baseline", "recipe-gpu")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    # The recipe's table: our row, the baseline row, the ratio row, and the best batch size; aligned plain text on
    # the terminal, markdown in report.md.
    assert "against recipe-gpu:" in " ".join(out.split()) and "bs  img/s  baseline  ratio" in out
    assert re.search(r"^ 1 +[\d.]+ +62\.0 +[\d.]+$", out, re.M) and re.search(r"^ 4 +[\d.]+ +77\.0 +[\d.]+$", out, re.M)
    assert "Best batch size: " in out
    markdown = (tmp_path / "work" / "runs" / "by-hand-1" / "report.md").read_text()
    assert "| throughput (img/s) | bs1 | bs4 |" in markdown
    assert "| recipe-gpu | 62.0 | 77.0 |" in markdown and "/ recipe-gpu |" in markdown
    assert "Best batch size: **" in markdown
    # What the numbers are (and are not) is said in the output itself.
    assert "NOTE: random weights" in out and "NOTE: generated images, not ImageNet." in out

    result = tmp_path / "work" / "runs" / "by-hand-1" / "result"
    for bs in (1, 4):  # ais_bench layout: one TXT per image, none for padding
        assert len(list((result / f"twins_svt_large_bs{bs}").glob("ILSVRC2012_val_*_0.txt"))) == 16
        assert (result / f"twins_svt_large_bs{bs}_summary.json").is_file()

    run = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}").get_run("by-hand-1")
    assert run["status"] == "success" and run["random_init"] is True and run["config"]["synthetic_data"] is True
    assert [b["batch_size"] for b in run["batches"]] == [1, 4]
    for b in run["batches"]:
        assert b["num_images"] == 16 and b["num_missing"] == 0 and b["throughput"] > 0
        assert b["agreement_images"] == 4 and b["agreement_top1"] == 100.0 and b["agreement_max_abs_diff"] < 1e-4

    # A second run reuses what the first built (inputs, ONNX, artifacts) and adds its own rows.
    # Its regression check compares it with the first (2-loop CPU timings are noisy: any throughput change passes).
    second = _run(tmp_path, "by-hand-2", "--max-throughput-drop-pct", "1000")
    assert second.returncode == 0, second.stderr[-3000:]
    for reused in ("Reusing preprocessed inputs", "Reusing ONNX model", "Reusing compiled artifact"):
        assert reused in second.stderr
    assert "(up to run by-hand-1)" in second.stdout
    assert "Regression check: PASSED" in second.stdout
    runs = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}").list_runs(10)
    assert sorted(r["run_key"] for r in runs) == ["by-hand-1", "by-hand-2"]
