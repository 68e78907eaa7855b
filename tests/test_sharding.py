"""One batch size over several chips: disjoint slices of its inputs, one ais_bench per chip, outputs merged.

The Ascend doubles hold a lock per fake chip while they run (a second process on one chip fails loudly and is
logged as a clash), and log each batch's files with its device, so the tests see which chip ran what.
"""

from __future__ import annotations

import fcntl
import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest
from test_devices import Holder

from tests.doubles.helpers import SET_ENV, fake_host, make_inputs, make_model, read_log
from twins_tasks.backends.ascend import AscendBackend
from twins_tasks.cli.arguments import recipe_from_args
from twins_tasks.devices import lease_chip, lease_chips
from twins_tasks.errors import InputError, ToolError
from twins_tasks.recipe import RecipeConfig
from twins_tasks.sharding import slice_inputs
from twins_tasks.steps import infer_step


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A fake host with 3 chips: the doubles' environment, a lease folder and chip locks of its own."""
    fake_host(monkeypatch, tmp_path, 3)
    artifact = _backend().compile(make_model(tmp_path / "m.onnx"), 2, tmp_path / "compiled").artifact
    inputs = make_inputs(tmp_path / "bins", 10)
    return artifact, inputs


def _backend() -> AscendBackend:
    """A backend made now: it loads the CANN environment, with the FAKE_* knobs set so far, once."""
    return AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_aicore_max=None)


def _events(tmp_path: Path, kind: str) -> list[dict]:
    return [e for e in read_log(tmp_path / "calls.jsonl", "events") if e["event"] == kind]


def _infer(artifact: str, tmp_path: Path, chips: list[int], out: str = "out") -> dict:
    return infer_step(_backend(), artifact, tmp_path / "bins", 2, tmp_path / out, "bs2", "TXT", device_ids=chips)


def test_three_free_chips_run_three_disjoint_slices_at_once_merged_into_one_folder(host, monkeypatch, tmp_path):
    artifact, inputs = host
    monkeypatch.setenv("FAKE_AIS_BATCH_SECONDS", "0.6")  # long enough for the three to overlap
    record = _infer(artifact, tmp_path, [0, 1, 2])

    # Three ais_bench runs, one per chip, each on a contiguous slice of whole batches (4 + 4 + 2 images).
    runs = [c["argv"] for c in read_log(tmp_path / "calls.jsonl", "ais_bench")]
    assert sorted(argv[argv.index("--device") + 1] for argv in runs) == ["0", "1", "2"]
    ran: dict[int, list[str]] = {}
    for batch in _events(tmp_path, "batch"):
        ran.setdefault(batch["device"], []).extend(dict.fromkeys(Path(f).name for f in batch["files"]))
    names = [p.name for p in inputs]
    assert sorted(ran.values(), key=lambda files: names.index(files[0])) == [names[0:4], names[4:8], names[8:10]]
    # At once: every chip was held before any was released.
    holds, releases = _events(tmp_path, "holds"), _events(tmp_path, "releases")
    assert len(holds) == 3 and max(e["at"] for e in holds) < min(e["at"] for e in releases)
    assert not _events(tmp_path, "clash")

    # One folder, each output exactly once; nothing of the slices left behind.
    final = tmp_path / "out" / "bs2"
    assert sorted(p.name for p in final.iterdir()) == sorted(f"{p.stem}_0.txt" for p in inputs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bs2", "bs2_summary.json"]
    assert record["num_outputs"] == 10 and record["output_dir"] == str(final)
    assert sorted(record["chips"]) == [0, 1, 2] and record["chip"] == record["chips"][0]
    assert record["device"].split(":")[1] == ",".join(f"npu{c}" for c in record["chips"])
    assert sorted(s["images"] for s in record["slices"]) == [2, 4, 4]

    # The summary: one filesinfo in input order, from the original bins to the final outputs.
    summary = json.loads((tmp_path / "out" / "bs2_summary.json").read_text())
    infos = [summary["filesinfo"][str(i)] for i in range(10)]
    assert [i["infiles"] for i in infos] == [[str(p)] for p in inputs]
    assert [i["outfiles"] for i in infos] == [[str(final / f"{p.stem}_0.txt")] for p in inputs]
    assert summary["NPU_compute_time"]["count"] == 5 == len(summary["npu_compute_time_list"])
    assert len(summary["slices"]) == 3 and "filesinfo" not in record["summary"]

    # The same outputs, byte for byte, as one chip writes them.
    single = _infer(artifact, tmp_path, [0], out="one")
    for path in final.iterdir():
        assert path.read_bytes() == (tmp_path / "one" / "bs2" / path.name).read_bytes()
    assert single["chips"] == [0] and single["device"].endswith(":npu0") and len(single["slices"]) == 1


def test_one_chip_runs_the_whole_input_folder_as_before(host, tmp_path):
    artifact, _ = host
    record = _infer(artifact, tmp_path, [2])
    [argv] = [c["argv"] for c in read_log(tmp_path / "calls.jsonl", "ais_bench")]
    assert argv[argv.index("--input") + 1] == str((tmp_path / "bins").resolve())  # no slice folder
    assert argv[argv.index("--device") + 1] == "2" and record["device"].endswith(":npu2")
    assert record["num_outputs"] == 10


def test_a_chip_leased_by_another_task_is_never_used_and_its_slice_waits_for_a_free_one(host, tmp_path):
    artifact, _ = host
    holder = Holder("other bs", "1")
    try:
        assert holder.leased() == 1
        record = _infer(artifact, tmp_path, [0, 1, 2])
    finally:
        holder.release()
    # Three slices on the two free chips (one ran two, one after the other), none on the leased chip.
    assert sorted(set(record["chips"])) == [0, 2] and len(record["slices"]) == 3
    assert {e["device"] for e in _events(tmp_path, "holds")} == {0, 2}
    assert not _events(tmp_path, "clash")
    assert len(list((tmp_path / "out" / "bs2").iterdir())) == 10


def test_chips_freed_while_slices_wait_join_the_batch_size(host, monkeypatch, tmp_path):
    artifact, _ = host
    monkeypatch.setenv("FAKE_AIS_BATCH_SECONDS", "1.0")
    holders = [Holder("bs 1", "1"), Holder("bs 4", "2")]
    assert [h.leased() for h in holders] == [1, 2]
    records: list[dict] = []
    task = threading.Thread(target=lambda: records.append(_infer(artifact, tmp_path, [0, 1, 2])))
    task.start()
    deadline = time.monotonic() + 30
    while not _events(tmp_path, "holds") and time.monotonic() < deadline:  # its first slice runs on chip 0
        time.sleep(0.05)
    for holder in holders:
        holder.release()
    task.join(timeout=60)
    [record] = records
    assert record["chips"][0] == 0 and sorted(record["chips"]) == [0, 1, 2]  # the freed chips took slices 2 and 3
    assert not _events(tmp_path, "clash")


def test_a_failed_slice_fails_the_batch_size_and_frees_every_chip(host, monkeypatch, tmp_path):
    artifact, _ = host
    monkeypatch.setenv("FAKE_AIS_CRASH", "1")
    with pytest.raises(ToolError, match="ais_bench inference"):
        _infer(artifact, tmp_path, [0, 1, 2])
    assert not (tmp_path / "out" / "bs2").exists() and not list((tmp_path / "out").glob("*.slices"))
    for chip in (0, 1, 2):  # every lease released
        with lease_chip([chip], purpose="after", wait_s=0.5):
            pass


@pytest.mark.parametrize(
    "count, batch, parts, sizes",
    [(10, 2, 3, [4, 4, 2]), (10, 4, 3, [4, 4, 2]), (9, 2, 4, [4, 4, 1]), (3, 8, 4, [3]), (12, 1, 4, [3, 3, 3, 3])],
)
def test_slices_are_contiguous_whole_batches(count, batch, parts, sizes):
    files = [Path(f"{i}.bin") for i in range(count)]
    got = slice_inputs(files, batch, parts)
    assert [len(s) for s in got] == sizes and [f for s in got for f in s] == files


def test_the_task_runner_stops_every_tool_of_a_split_inference_when_the_task_is_killed():
    from twins_airflow.hooks import ToolHook

    hook = ToolHook(kill_grace_s=5)
    results: list = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    tools = [threading.Thread(target=lambda: results.append(hook(sleeper))) for _ in range(3)]  # one per chip
    for tool in tools:
        tool.start()
    deadline = time.monotonic() + 30
    while len(hook.sub_processes) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    hook.send_sigterm()  # the operator's on_kill
    for tool in tools:
        tool.join(timeout=30)
    assert len(results) == 3 and all(r.exit_code != 0 for r in results) and time.monotonic() - start < 10


def test_infer_chips_caps_the_chips_of_one_inference(host, tmp_path):
    artifact, _ = host
    two = infer_step(_backend(), artifact, tmp_path / "bins", 2, tmp_path / "a", "bs2", "TXT", device_ids=[0, 1, 2],
                     max_chips=2)  # fmt: skip
    assert len(two["slices"]) == 2 and len(set(two["chips"])) == 2 and two["num_outputs"] == 10
    one = infer_step(_backend(), artifact, tmp_path / "bins", 2, tmp_path / "b", "bs2", "TXT", device_ids=[0, 1, 2],
                     max_chips=1)  # fmt: skip
    assert one["chips"] == [0] and len(one["slices"]) == 1  # one chip per batch size, as before the split


def test_infer_chips_is_the_same_setting_from_a_flag_and_a_param_and_is_checked():
    from test_recipe import _cli_args, _dag_params

    flags = ("--root_path", "/data/val", "--random-init", "--backend", "onnxruntime", "--batch-sizes", "1,4",
             "--loop", "2", "--reference-images", "3")  # fmt: skip
    assert recipe_from_args(_cli_args(*flags)).infer_chips == RecipeConfig.from_params(_dag_params()).infer_chips == 0
    capped = recipe_from_args(_cli_args(*flags, "--infer-chips", "2"))
    assert capped == RecipeConfig.from_params(_dag_params(infer_chips=2)) and capped.infer_chips == 2
    with pytest.raises(InputError, match="infer chips -1 must be 0"):
        RecipeConfig(dataset_path="/data/val", random_init=True, infer_chips=-1)


def test_leasing_rounds_take_turns_so_that_one_round_takes_every_free_chip(host, tmp_path):
    (tmp_path / "leases").mkdir(exist_ok=True)
    got: list[list[int]] = []

    def take() -> None:
        with lease_chips([0, 1, 2], purpose="bs 8 infer", most=3, wait_s=10) as leases:
            got.append(leases.held)

    with open(tmp_path / "leases" / "rounds.lock", "a+") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)  # another task's round in progress
        task = threading.Thread(target=take)
        task.start()
        task.join(timeout=0.5)
        assert task.is_alive() and not got  # it waits for its turn, holding no chip meanwhile
        fcntl.flock(turn, fcntl.LOCK_UN)
    task.join(timeout=10)
    assert got == [[0, 1, 2]]


def test_a_batch_size_that_wants_more_chips_gets_the_freed_ones_before_one_that_has_not_started(
    host, monkeypatch, tmp_path, caplog
):
    artifact, _ = host
    monkeypatch.setenv("FAKE_AIS_BATCH_SECONDS", "1.0")
    caplog.set_level(logging.INFO, logger="twins_tasks.devices")
    holders = [Holder("bs 1 perf", "1"), Holder("bs 16 perf", "2")]
    assert [h.leased() for h in holders] == [1, 2]
    records: list[dict] = []
    started = threading.Thread(target=lambda: records.append(_infer(artifact, tmp_path, [0, 1, 2])))
    started.start()  # on chip 0, the only free one, with two slices waiting
    deadline = time.monotonic() + 30
    while not list((tmp_path / "leases").glob("wants-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    later: list[list[int]] = []

    def newcomer() -> None:
        with lease_chips([0, 1, 2], purpose="bs 4 infer", most=3, defer=True, wait_s=60) as leases:
            later.append(leases.held)

    waiting = threading.Thread(target=newcomer)
    waiting.start()
    for holder in holders:
        holder.release()
    started.join(timeout=60)
    waiting.join(timeout=60)
    [record] = records
    assert sorted(record["chips"]) == [0, 1, 2]  # the freed chips went to the batch size already running
    assert "NPU 1: left to bs2 infer, which wants more chips" in caplog.text
    assert later and later[0]  # and the newcomer started once it wanted none
    assert not list((tmp_path / "leases").glob("wants-*"))


def test_a_task_that_wants_more_chips_holds_up_only_those_it_could_take(host):
    holder = Holder("bs 1 perf", "1")
    try:
        assert holder.leased() == 1
        with lease_chips([0, 1], purpose="bs2 infer", most=2, wait_s=5) as growing:
            assert growing.held == [0]  # and it wants chip 1, held by the perf
            with lease_chips([2], purpose="other run", defer=True, wait_s=5) as other:
                assert other.held == [2]  # not one of its chips: taken at once
            with pytest.raises(ToolError, match="NPU 0: left to bs2 infer, which wants more chips"):
                with lease_chips([0], purpose="late", defer=True, wait_s=0.3):
                    pass
    finally:
        holder.release()
