"""Every NPU at once: chips from npu-smi, and a host-local lease that never lets two tasks share a chip.

Holders run as separate processes (tests/doubles/lease_holder.py), as Airflow workers would, so the locks
are the kernel's, not this process's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.doubles.helpers import SET_ENV, fake_host, make_inputs, make_model, read_log
from twins_tasks.backends import get_backend
from twins_tasks.backends.ascend import AscendBackend, IdlePolicy
from twins_tasks.checks import parse_device_ids
from twins_tasks.cli import main
from twins_tasks.devices import check_chips, check_lease_dir, lease_chip, resolve_device_ids
from twins_tasks.errors import InputError, ToolError
from twins_tasks.recipe import BackendSettings, RecipeConfig
from twins_tasks.steps import perf_step, plan_run
from twins_tasks.store import ResultsStore
from twins_tasks.toolrun import run_tool

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def host(monkeypatch, tmp_path):
    """A fake host: the doubles' environment, a lease folder and chip locks of its own."""
    fake_host(monkeypatch, tmp_path, 2)
    return tmp_path


class Holder:
    """One lease_holder process: a task that leases a chip."""

    def __init__(self, purpose: str, chips: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.doubles.lease_holder", purpose, chips, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )

    def leased(self, timeout: float = 30.0) -> int | None:
        """The chip once the holder prints LEASED; None if it has not within ``timeout``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        assert line.startswith("LEASED "), (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        return int(line.split()[1])

    def release(self) -> str:
        out, err = self.proc.communicate("\n", timeout=60)
        assert self.proc.returncode == 0, err
        return err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)


def test_two_tasks_get_different_chips_and_a_third_waits_for_a_release(host):
    first, second = Holder("bs 1", "0,1"), None
    try:
        chip_a = first.leased()
        second = Holder("bs 4", "0,1")
        chip_b = second.leased()
        assert {chip_a, chip_b} == {0, 1}
        third = Holder("bs 8", "0,1")
        assert third.leased(timeout=1.5) is None  # both chips are leased: it waits
        log_b = second.release()
        assert third.leased() == chip_b  # the released chip, and only once it was released
        assert f"Leased NPU {chip_b} for bs 4" in log_b and f"Released NPU {chip_b} (bs 4)" in log_b
        log_c = third.release()
        assert "Waiting for a free NPU of [0, 1] for bs 8" in log_c and "leased by bs 1 (pid" in log_c
    finally:
        for holder in (first, second):
            if holder is not None and holder.proc.poll() is None:
                holder.release()


def test_a_killed_holder_frees_its_chip(host, caplog):
    holder = Holder("doomed", "1")
    assert holder.leased() == 1
    holder.kill()  # a worker crash: no code of ours runs, the kernel drops the lock
    caplog.set_level(logging.INFO, logger="twins_tasks.devices")
    with lease_chip([1], purpose="next", wait_s=5, poll_s=0.05) as chip:
        assert chip == 1
    assert "Leased NPU 1 for next (waited 0 s)" in caplog.text


def test_a_busy_chip_is_skipped_and_waited_for(host, monkeypatch, tmp_path):
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3")
    monkeypatch.setenv("FAKE_NPU_AICORE", "90,0")  # chip 0 runs someone else's job
    backend.env["FAKE_NPU_AICORE"] = "90,0"
    with lease_chip([0, 1], purpose="bs 1", read_devices=backend.npu_devices, wait_s=5, poll_s=0.05) as chip:
        assert chip == 1
    sequence = tmp_path / "aicore.txt"
    sequence.write_text("90,90\n90,90\n2,90\n")
    backend.env["FAKE_NPU_AICORE_FILE"] = str(sequence)
    with lease_chip([0, 1], purpose="bs 4", read_devices=backend.npu_devices, wait_s=30, poll_s=0.05) as chip:
        assert chip == 0
    assert len(read_log(host / "calls.jsonl", "npu-smi")) == 1 + 3  # one npu-smi call per round, not per chip


def test_a_chip_that_stays_busy_or_leased_fails_naming_why(host, monkeypatch):
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3")
    backend.env["FAKE_NPU_AICORE"] = "0,75"
    with lease_chip([0], purpose="bs 1", wait_s=5, poll_s=0.05):
        with pytest.raises(ToolError) as err:
            with lease_chip([0, 1], purpose="bs 4", read_devices=backend.npu_devices, wait_s=0.3, poll_s=0.05):
                pass
    message = str(err.value)
    assert "no NPU of [0, 1] became free for bs 4 within 0.3 s" in message
    assert "NPU 0: leased by bs 1 (pid" in message and "NPU 1: busy outside our leases (device 1" in message
    assert "AICore 75%" in message and "need AICore <= 5%" in message
    with lease_chip([0], purpose="again", wait_s=1, idle=IdlePolicy(aicore_max=80), read_devices=backend.npu_devices):
        pass  # released on exit, and the threshold is the caller's


def test_a_lease_is_released_when_the_block_raises(host):
    with pytest.raises(RuntimeError, match="boom"):
        with lease_chip([0], purpose="fails", wait_s=1):
            raise RuntimeError("boom")
    with lease_chip([0], purpose="after", wait_s=1) as chip:
        assert chip == 0


def test_list_chips_and_device_ids(host, monkeypatch):
    monkeypatch.setenv("TWINS_FAKE_NPUS", "4")
    backend = AscendBackend(cann_env=str(SET_ENV))
    assert backend.list_chips() == [0, 1, 2, 3]
    assert resolve_device_ids("auto", backend.list_chips) == [0, 1, 2, 3]
    assert resolve_device_ids([2, 0], backend.list_chips) == [2, 0]
    for bad, match in (([], "non-empty list"), ("0,1", "must be 'auto' or"), (["0"], "'0' is not"), ([1, 1], "twice")):
        with pytest.raises(InputError, match=match):
            resolve_device_ids(bad, backend.list_chips)
    with pytest.raises(ToolError, match="shows no NPU chip"):
        resolve_device_ids("auto", lambda: [])


def test_leased_tasks_never_share_a_chip_and_the_doubles_would_notice(host, monkeypatch):
    """Four inference tasks on two chips, through leases: no clash. Without leases, the doubles catch one."""
    monkeypatch.setenv("FAKE_AIS_BATCH_SECONDS", "0.3")
    inputs = host / "bin_path"
    make_inputs(inputs, 3)
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_wait_s=0)
    artifact = backend.compile(make_model(host / "m.onnx"), 1, host / "compiled").artifact
    holders = [Holder(f"bs{i}", "0,1", "--infer", artifact, str(inputs), str(host / "out")) for i in range(4)]
    for holder in holders:
        holder.release()
    events = read_log(host / "calls.jsonl", "events")
    assert not [e for e in events if e["event"] == "clash"]
    assert {e["device"] for e in events if e["event"] == "holds"} == {0, 1}
    for device in (0, 1):  # on each chip, one holder after another: held, released, held, released ...
        spans = sorted(
            (e["at"], e["event"]) for e in events if e["event"] in ("holds", "releases") and e["device"] == device
        )
        sequence = [event for _, event in spans]
        assert sequence == ["holds", "releases"] * (len(sequence) // 2) and sequence
    # The control: two inferences forced onto chip 0 at once collide, and the double says so.
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "ais_bench", "--model", artifact, "--input", str(inputs), "--device", "0"],
            env={**os.environ, "PYTHONPATH": str(SET_ENV.parent), "FAKE_AIS_SLEEP": "3"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in started]
    assert sorted(p.returncode for p in started) == [0, 1]
    assert "fake NPU device 0 is already in use by pid" in "".join(outputs)


def test_a_released_chip_is_taken_at_once_not_after_an_npu_smi_poll(host, caplog):
    # A chip handed from one task to the next sat idle for up to a whole npu-smi poll (5 s by default): on
    # 1-4 chips that added seconds to every hand-over. The lock is retried often; npu-smi is read afresh then.
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3")
    holder = Holder("bs 1", "0")
    assert holder.leased() == 0
    timer = threading.Timer(0.5, holder.release)
    timer.start()
    caplog.set_level(logging.INFO, logger="twins_tasks.devices")
    try:
        started = time.monotonic()
        with lease_chip([0], purpose="bs 4", read_devices=backend.npu_devices, wait_s=60, poll_s=30) as chip:
            waited = time.monotonic() - started
    finally:
        timer.join()
    assert chip == 0 and waited < 10, f"waited {waited:.1f} s for a chip released after 0.5 s (npu-smi poll: 30 s)"
    assert len(read_log(host / "calls.jsonl", "npu-smi")) == 1  # read once, when the lock was free


def test_a_chip_busy_outside_our_leases_is_read_again_only_every_poll(host):
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3")
    backend.env["FAKE_NPU_AICORE"] = "90,0"
    with pytest.raises(ToolError, match="busy outside our leases"):
        with lease_chip([0], purpose="bs 1", read_devices=backend.npu_devices, wait_s=1.6, poll_s=1.0):
            pass
    # Its lock was tried every LOCK_RETRY_S (about 6 times), npu-smi read at 0 s and 1 s only.
    assert len(read_log(host / "calls.jsonl", "npu-smi")) == 2


# -- a tool never outlives its task, and the lease lasts while it runs -------------------------------------------

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie that init has not reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _lease_free(folder: Path, chip: int) -> bool:
    """Whether nobody holds ``chip``'s lease (tried as lease_chip does, and let go at once)."""
    fd = os.open(folder / f"npu{chip}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@LINUX
def test_a_killed_task_takes_its_tool_with_it_and_frees_the_chip_only_then(host, monkeypatch):
    # SIGKILL of `twins run` or a worker left ais_bench running on its chip, re-parented to init, while the lease
    # was already free for the next task.
    monkeypatch.setenv("FAKE_AIS_SLEEP", "60")  # a hung ais_bench
    inputs = host / "bin_path"
    make_inputs(inputs, 1)
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_wait_s=0)
    artifact = backend.compile(make_model(host / "m.onnx"), 1, host / "compiled").artifact
    holder = Holder("doomed", "1", "--infer", artifact, str(inputs), str(host / "out"))
    tool = None
    try:
        assert holder.leased() == 1
        deadline = time.monotonic() + 30
        while tool is None and time.monotonic() < deadline:
            calls = read_log(host / "calls.jsonl", "ais_bench")
            tool = calls[0]["pid"] if calls else None
            time.sleep(0.05)
        assert tool is not None and _alive(tool), "ais_bench did not start"
        holder.kill()  # no code of ours runs
        deadline = time.monotonic() + 10
        while _alive(tool):
            if _lease_free(host / "leases", 1):
                time.sleep(1.0)  # the lock goes with the tool's files, a moment before it is gone from /proc
                assert not _alive(tool), "chip 1's lease was free while its ais_bench still ran"
            assert time.monotonic() < deadline, "ais_bench outlived its killed task by 10 s"
            time.sleep(0.05)
        with lease_chip([1], purpose="next", wait_s=5, poll_s=0.05) as chip:
            assert chip == 1
    finally:
        if tool is not None and _alive(tool):
            os.kill(tool, signal.SIGKILL)
        if holder.proc.poll() is None:
            holder.kill()


@LINUX
def test_a_tool_run_on_a_leased_chip_holds_the_lease_file_open(host):
    # What keeps the chip leased if the task dies and its tool lives on (e.g. a child of the tool, which the
    # death signal does not reach): the tool has the lease's lock open, and flock holds while one copy is open.
    show = [
        sys.executable,
        "-c",
        "import os\nfor fd in os.listdir('/proc/self/fd'):\n"
        "    try: print(os.readlink(f'/proc/self/fd/{fd}'))\n    except OSError: pass",
    ]
    with lease_chip([1], purpose="bs 1", wait_s=5):
        lock = str((host / "leases" / "npu1.lock").resolve())  # as /proc shows it
        inside = run_tool(show)
    after = run_tool(show)
    assert lock in inside.lines, inside.lines
    assert lock not in after.lines  # a released lease is nobody's


# -- plan checks the chips and the lease folder on its host, before any compute ----------------------------------


def _twins_run(tmp_path: Path, *flags: str, cann_env: Path = SET_ENV) -> int:
    """``twins run`` on the Ascend doubles with an empty dataset folder: it must fail at plan."""
    (tmp_path / "val").mkdir(exist_ok=True)
    return main(
        [
            "run", "--root_path", str(tmp_path / "val"), "--random-init", "--backend", "ascend",
            "--cann-env", str(cann_env), "--work-dir", str(tmp_path / "work"),
            "--results-url", f"sqlite:///{tmp_path / 'results.db'}", "--run-name", "checked", *flags,
        ]
    )  # fmt: skip


def _broken_npu_smi(tmp_path: Path) -> Path:
    """A CANN environment whose npu-smi fails as a real one does when the driver is not loaded."""
    bin_dir = tmp_path / "broken-bin"
    bin_dir.mkdir()
    tool = bin_dir / "npu-smi"
    tool.write_text('#!/bin/sh\necho "dcmi module initialize failed. ret is -8005"\nexit 255\n')
    tool.chmod(0o755)
    env = tmp_path / "set_env.sh"
    env.write_text(f'source "{SET_ENV}"\nexport PATH="{bin_dir}:$PATH"\n')
    return env


@pytest.mark.parametrize(
    "flags, setup, says",
    [
        (["--device-ids", "7"], None, "NPU device 7 of device_ids [7] is not on host {host}, where plan runs "
         "(npu-smi info there shows device 0, 1): choose device ids among those, or auto"),
        (["--device-ids", "1,5,6"], None, "NPU device 5, 6 of device_ids [1, 5, 6] is not on host {host}"),
        (["--device-ids", "99999999999999999999"], None,
         "device id '99999999999999999999' is out of range: use 0 to 255"),
        (["--device-ids", "0,1"], "lease folder under a file", "NPU lease folder {file}/leases (TWINS_LEASE_DIR) "
         "is not usable on host {host}: Not a directory: set TWINS_LEASE_DIR to a folder"),
        ([], "broken npu-smi", "cannot read the NPU chips of host {host}, where plan runs (npu-smi info failed "
         "(exit 255): dcmi module initialize failed. ret is -8005): device_ids and soc_version=auto are checked"),
    ],
)  # fmt: skip
def test_plan_checks_the_chips_and_the_lease_folder_on_its_host_before_any_work(
    host, monkeypatch, capsys, flags, setup, says
):
    # --device-ids 7 on a 2-chip host compiled, then failed every batch size; 99999999999999999999 ended in an
    # OverflowError at record; a lease folder that cannot be created, and a broken npu-smi with soc_version=auto,
    # were found only after compile. Now plan says so, naming the host it checked.
    file = host / "a-file"
    file.write_text("")
    cann_env = SET_ENV
    if setup == "lease folder under a file":
        monkeypatch.setenv("TWINS_LEASE_DIR", str(file / "leases"))
    elif setup == "broken npu-smi":
        cann_env = _broken_npu_smi(host)
    assert _twins_run(host, *flags, cann_env=cann_env) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("twins run: error: ")]
    assert len(errors) == 1 and says.format(host=socket.gethostname(), file=file) in errors[0], errors
    assert not (host / "work").exists()  # nothing prepared, exported or compiled
    assert read_log(host / "calls.jsonl", "atc") == []


def test_check_chips_resolves_on_this_host_and_makes_the_lease_files(host, tmp_path):
    backend = AscendBackend(cann_env=str(SET_ENV))  # soc_version auto, device 0
    assert check_chips(backend, "auto") == [0, 1]
    assert check_chips(backend, (1,)) == [1]
    assert sorted(p.name for p in (host / "leases").iterdir()) == ["npu0.lock", "npu1.lock"]
    for bad in ("256", "-1", "1,x"):
        with pytest.raises(InputError, match="out of range: use 0 to 255|is not an integer"):
            parse_device_ids(bad)
    with pytest.raises(InputError, match="must be an integer from 0 to 255"):
        AscendBackend(cann_env=str(SET_ENV), device=256)


def test_auto_on_a_host_without_chip_0_plans_on_the_chips_it_has(host, tmp_path, monkeypatch):
    # The backend's own chip stayed 0 under device_ids=auto: soc_version=auto then read a chip the host lacks and
    # plan failed ("soc_version=auto reads NPU device 0 ..."). Now it is the first chip npu-smi shows.
    monkeypatch.setenv("FAKE_NPU_IDS", "2,3")
    (tmp_path / "val").mkdir()
    backend = BackendSettings(name="ascend", cann_env=str(SET_ENV), device_ids="auto")  # soc_version auto
    config = RecipeConfig(dataset_path=str(tmp_path / "val"), random_init=True, backend=backend)
    store = ResultsStore(f"sqlite:///{tmp_path / 'results.db'}")
    plan = plan_run(config, work_dir=tmp_path / "work", run_key="no-chip-0", store=store)
    assert plan["device_ids"] == [2, 3] and plan["backend_options"]["device"] == 2
    assert plan["backend_description"]["soc_version"] == "Ascend310P3"
    backend_on_2 = get_backend(plan["backend"], **plan["backend_options"])
    artifact = backend_on_2.compile(make_model(host / "m.onnx"), 1, host / "compiled").artifact
    perf = perf_step(backend_on_2, artifact, 1, loop=1, device_ids=plan["device_ids"])
    assert perf["device"].endswith((":npu2", ":npu3")), perf["device"]


def test_an_unwritable_lease_folder_is_named_at_plan_and_at_lease(host, tmp_path):
    folder = tmp_path / "ro-leases"
    (folder / "npu0.lock").mkdir(parents=True)  # a lock file that cannot be opened for writing
    for check in (
        lambda: check_lease_dir([0], folder),
        lambda: lease_chip([0], purpose="x", folder=folder).__enter__(),
    ):
        with pytest.raises(InputError, match=rf"NPU lease folder {folder} \(TWINS_LEASE_DIR\) is not usable .*: Is a "):
            check()
    if os.geteuid() != 0:  # root writes into a read-only folder; an ordinary user (a worker) does not
        folder.chmod(0o555)
        try:
            with pytest.raises(InputError, match="Permission denied"):
                check_lease_dir([1], folder)
        finally:
            folder.chmod(0o755)
