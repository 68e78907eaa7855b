"""NPU chips of this host: which there are, and a lease that gives one task one chip at a time.

Several batch sizes run at once on a host with several chips; two of them on one chip would disturb each
other's numbers (and the recipe asks for an idle device). A lease is an exclusive ``fcntl.flock`` on a
host-local file per chip (``$TWINS_LEASE_DIR``, default ``/tmp/twins-npu-leases``): the kernel drops it when
the holder's file is closed, so a worker that crashes or is killed frees its chip at once, and no chip is
lost to a stale lock file. The tools run on a leased chip inherit the lock file (``toolrun.inherit_fds``), so
the lease lasts while one of them still runs, and they are killed with their task (``toolrun``). A chip that
another program is using (AICore above the idle threshold in ``npu-smi info``) is skipped as well.

``plan`` checks up front, on the host it runs on, that the run's chips are there and the lease folder usable
(:func:`check_chips`).

Usage (the Airflow operators, or any script)::

    with lease_chip(candidates, purpose="bs 8 infer+perf", read_devices=backend.npu_devices) as chip:
        on_chip = backend.with_device(chip)
        on_chip.infer(...)
        on_chip.perf(...)

A task that splits its work over several chips (one batch size's inference, :mod:`twins_tasks.sharding`)
holds a :class:`ChipLeases` (:func:`lease_chips`): the chips free when it starts, more as they free up, each
released on its own.

The lease directory must be on a local file system (``flock`` is host-local by design: chips are too).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .backends.ascend.backend import AscendBackend
from .backends.ascend.npu_smi import IdlePolicy, NpuDevice, find_device
from .constants import MAX_DEVICE_ID
from .errors import InputError, ToolError
from .toolrun import inherit_fds

log = logging.getLogger(__name__)

DEFAULT_LEASE_DIR = "/tmp/twins-npu-leases"
# How often a waiting lease says where it stands in the log.
PROGRESS_EVERY_S = 30.0
# How often a waiting lease retries the chips' locks: a released chip is taken within this, not after a whole
# npu-smi poll interval (trying a lock is a system call; npu-smi is a process, read at most every ``poll_s``).
LOCK_RETRY_S = 0.25
# Leasing rounds of the tasks of one host take turns through this lock file (ChipLeases.more).
TURN_FILE = "rounds.lock"
# ``<prefix><host>-<pid>-<id>.lock``: a task that holds chips and wants more (ChipLeases.more, take(defer=True)).
WANT_PREFIX = "wants-"


def lease_dir() -> Path:
    """Where the lease files live: ``$TWINS_LEASE_DIR`` or ``/tmp/twins-npu-leases``."""
    return Path(os.environ.get("TWINS_LEASE_DIR") or DEFAULT_LEASE_DIR)


def resolve_device_ids(device_ids: str | Sequence[int], chips: Callable[[], list[int]]) -> list[int]:
    """``auto`` = every chip ``chips()`` reports (``npu-smi info``); else the given ids, checked.

    :param device_ids: ``"auto"`` or a list of logical device ids (ints; strings are the caller's to convert).
    :param chips: reads the host's chips, e.g. ``AscendBackend.list_chips``.
    """
    if device_ids == "auto":
        found = chips()
        if not found:
            raise ToolError("device_ids=auto but npu-smi info shows no NPU chip on this host")
        return found
    if isinstance(device_ids, str) or not device_ids:
        raise InputError(f"device_ids={device_ids!r} must be 'auto' or a non-empty list of device ids, e.g. [0, 1]")
    ids = list(device_ids)
    for chip in ids:
        if isinstance(chip, bool) or not isinstance(chip, int) or not 0 <= chip <= MAX_DEVICE_ID:
            raise InputError(f"device_ids={ids!r}: {chip!r} is not a device id (an integer from 0 to {MAX_DEVICE_ID})")
    if len(set(ids)) != len(ids):
        raise InputError(f"device_ids={ids!r} names a chip twice")
    return ids


def check_chips(
    backend: AscendBackend, device_ids: str | Sequence[int], *, folder: str | os.PathLike | None = None
) -> list[int]:
    """The run's chips, checked at plan on this host (an NPU worker): before any compile, not at the first infer.

    Reads ``npu-smi info`` once: ``auto`` becomes every chip it shows, and an explicit id must be one of them
    (plan then gives the backend the first of these chips, which ``soc_version=auto`` reads). It also proves that
    npu-smi answers there. Then the lease folder must be usable
    (:func:`check_lease_dir`). An :class:`InputError` that names this host otherwise: with several NPU hosts
    only the one that plans is checked, and each of them must have the run's chips.
    """
    host = socket.gethostname()
    if device_ids != "auto":
        resolve_device_ids(device_ids, lambda: [])  # the ids' shape, before any npu-smi
    try:
        devices = backend.npu_devices()
    except (ToolError, InputError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"cannot read the NPU chips of host {host}, where plan runs ({first}): device_ids and "
            "soc_version=auto are checked against npu-smi info there; fix the NPU driver or npu-smi on that host"
        ) from None
    shown = list(dict.fromkeys(dev.device_id for dev in devices))
    chips = resolve_device_ids(device_ids, lambda: shown)
    listed = ", ".join(map(str, shown))
    missing = [chip for chip in chips if chip not in shown]
    if missing:
        raise InputError(
            f"NPU device {', '.join(map(str, missing))} of device_ids {chips} is not on host {host}, where plan "
            f"runs (npu-smi info there shows device {listed}): choose device ids among those, or auto"
        )
    check_lease_dir(chips, folder)
    return chips


def check_lease_dir(chips: Sequence[int], folder: str | os.PathLike | None = None) -> Path:
    """The lease folder can be created and each chip's lock file opened as a lease will; an InputError if not.

    A read-only or uncreatable ``TWINS_LEASE_DIR`` used to show as a traceback at the first infer, after compile.
    """
    where = Path(folder) if folder is not None else lease_dir()
    try:
        _make_folder(where)
        for chip in chips:
            os.close(_open_lock(where, chip))
    except OSError as exc:
        raise InputError(
            f"NPU lease folder {where} (TWINS_LEASE_DIR) is not usable on host {socket.gethostname()}: "
            f"{exc.strerror or exc}: set TWINS_LEASE_DIR to a folder on a local disk that every NPU worker of this "
            f"host can create and write (default {DEFAULT_LEASE_DIR})"
        ) from None
    return where


def _holder(fd: int) -> str:
    """Who holds a lease, from what the holder wrote into its lock file."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(text)
        return f"{info['purpose']} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another task"


def _open_lock(folder: Path, chip: int) -> int:
    # 0o666 and an open folder: the workers of one host may run as different users.
    return os.open(folder / f"npu{chip}.lock", os.O_RDWR | os.O_CREAT, 0o666)


def _make_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # someone else's folder: theirs to open up
        os.chmod(folder, 0o1777)


@contextlib.contextmanager
def lease_chip(
    candidates: Sequence[int],
    *,
    purpose: str,
    read_devices: Callable[[], Sequence[NpuDevice]] | None = None,
    idle: IdlePolicy | None = None,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
    folder: str | os.PathLike | None = None,
) -> Iterator[int]:
    """Hold one of ``candidates`` for the block: a chip no other lease on this host holds, and idle.

    Tries the candidates in order; waits while all are leased or busy, saying which and why in the log; a
    :class:`ToolError` naming each chip's holder or load after ``wait_s``. A chip released by another lease is
    taken within :data:`LOCK_RETRY_S`; ``npu-smi`` is read again for a chip it showed busy only every ``poll_s``.

    :param candidates: logical device ids to choose from (see :func:`resolve_device_ids`).
    :param purpose: what the chip is for, e.g. ``"run 42 bs 8 infer+perf"``: logged, and shown to waiters.
    :param read_devices: reads ``npu-smi info`` (e.g. ``AscendBackend.npu_devices``); None skips the idle
        check (only other leases keep a chip busy then).
    :param idle: when a chip counts as idle (default: AICore <= 5%).
    :param folder: lease directory (default :func:`lease_dir`).
    :returns: the leased chip's logical device id (a context manager yielding it).
    """
    with lease_chips(
        candidates, purpose=purpose, read_devices=read_devices, idle=idle, wait_s=wait_s, poll_s=poll_s, folder=folder
    ) as leases:
        chip = leases.held[0]
        with leases.tools_hold(chip):  # a tool started on the chip holds the lease too, even if we die first
            yield chip


@contextlib.contextmanager
def lease_chips(
    candidates: Sequence[int],
    *,
    purpose: str,
    most: int = 1,
    defer: bool = False,
    read_devices: Callable[[], Sequence[NpuDevice]] | None = None,
    idle: IdlePolicy | None = None,
    wait_s: float = 3600.0,
    poll_s: float = 5.0,
    folder: str | os.PathLike | None = None,
) -> Iterator[ChipLeases]:
    """Hold up to ``most`` of ``candidates`` for the block: waits as :func:`lease_chip` for the first, then
    takes every other one free at that moment (up to ``most``); :meth:`ChipLeases.more` takes more later.
    ``defer``: start only when no task that already holds chips wants more (see :meth:`ChipLeases.take`).

    Every chip is released when the block ends (or earlier, :meth:`ChipLeases.release`).
    """
    leases = ChipLeases(candidates, purpose=purpose, read_devices=read_devices, idle=idle, poll_s=poll_s, folder=folder)
    try:
        leases.take(most, wait_s=wait_s, defer=defer)
        yield leases
    finally:
        leases.close()


class ChipLeases:
    """The chips one task holds, each an exclusive ``flock`` on its lease file (see the module's doc).

    A task that splits its work over chips (one batch size's inference) takes the free ones when it starts
    (:meth:`take`), more as they free up while work is left (:meth:`more`, never waiting), and lets each go as
    soon as it is done with it (:meth:`release`). ``used`` lists every chip it held, in the order taken.
    """

    def __init__(
        self,
        candidates: Sequence[int],
        *,
        purpose: str,
        read_devices: Callable[[], Sequence[NpuDevice]] | None = None,
        idle: IdlePolicy | None = None,
        poll_s: float = 5.0,
        folder: str | os.PathLike | None = None,
    ) -> None:
        self.candidates = resolve_device_ids(list(candidates), lambda: [])
        self.purpose = purpose
        self.read_devices = read_devices
        self.policy = idle or IdlePolicy()
        self.poll_s = poll_s
        # Plan checked the folder on its host; this task may run on another.
        self.where = check_lease_dir(self.candidates, folder)
        self.used: list[int] = []
        self.why_not: dict[int, str] = {}  # why each chip not held was not taken in the last round
        self._fds: dict[int, int] = {}  # held chip -> its lock file
        self._since: dict[int, float] = {}
        self._lock = threading.Lock()  # workers release chips while the task's thread takes more
        self._start = time.monotonic()
        self._devices: Sequence[NpuDevice] = ()
        self._read_at = -float("inf")
        self._busy: dict[int, str] = {}  # chips the last npu-smi read showed busy outside our leases, and how
        self._want: tuple[int, Path] | None = None  # our "wants more chips" file while we do, locked

    @property
    def held(self) -> list[int]:
        with self._lock:
            return list(self._fds)

    def take(self, most: int = 1, *, wait_s: float = 3600.0, defer: bool = False) -> list[int]:
        """Wait until at least one chip is free, then take up to ``most`` free ones; the chips taken.

        ``defer``: while another task holds chips and wants more for work it has waiting (a batch size that
        started on fewer chips than slices), leave the free chips to it. A batch size that started on one chip
        then spreads over the chips as they free up instead of grinding through its slices alone while new
        ones start beside it; the run ends with every chip on the last batch sizes, not one on a long tail.
        """
        start = time.monotonic()
        deadline = start + wait_s
        next_log = start
        while True:
            taken = self.more(most, defer=defer)
            if taken:
                return taken
            now = time.monotonic()
            states = "; ".join(f"NPU {chip}: {why}" for chip, why in self.why_not.items())
            if now >= deadline:
                raise ToolError(
                    f"no NPU of {self.candidates} became free for {self.purpose} within {wait_s:g} s ({states}): "
                    "wait for those tasks, add chips to device_ids, or raise the lease wait"
                )
            if now >= next_log:
                log.info(
                    "Waiting for a free NPU of %s for %s: %s; %.0f s left",
                    self.candidates,
                    self.purpose,
                    states,
                    deadline - now,
                )
                next_log = now + PROGRESS_EVERY_S
            time.sleep(max(0.0, min(LOCK_RETRY_S, self.poll_s, deadline - now)))

    def more(self, most: int, *, defer: bool = False) -> list[int]:
        """One round over the chips not held, in order: up to ``most`` of them free now (none: ``[]``).

        A task that holds chips and takes fewer than ``most`` says it wants more (a lock file of its own in the
        lease folder, dropped by the kernel if it dies) until :meth:`enough`; :meth:`take` ``defer`` yields to it.

        Rounds of all tasks on this host take turns (a lock file of their own, held for the round only): a
        round sees every chip free at that moment and may take them all. Interleaved, six batch sizes that
        became ready together on 4 chips took one chip each and ran their slices one after another.
        """
        turn = os.open(self.where / TURN_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(turn, fcntl.LOCK_EX)
            kept = self._others_wanting() if defer and not self._fds else {}
            taken = self._round(most, kept)
            self._wanting(bool(self._fds) and len(taken) < most)
            return taken
        finally:
            os.close(turn)  # closing drops the lock

    def enough(self) -> None:
        """We want no more chips (the work left is running): tasks that defer may take the free ones."""
        self._wanting(False)

    def _wanting(self, flag: bool) -> None:
        if flag and self._want is None:
            path = self.where / f"{WANT_PREFIX}{socket.gethostname()}-{os.getpid()}-{id(self)}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, json.dumps({"purpose": self.purpose, "chips": self.candidates}).encode(), 0)
            self._want = (fd, path)
        elif not flag and self._want is not None:
            fd, path = self._want
            self._want = None
            path.unlink(missing_ok=True)
            os.close(fd)

    def _others_wanting(self) -> dict[int, str]:
        """The chips other live tasks that want more may take, each with what it is for (only those: a run on
        other chips of the host is not held up); stale files are removed. Called in a round's turn, as
        :meth:`_wanting` creates them: a file is never seen between its creation and its lock."""
        kept: dict[int, str] = {}
        for entry in os.scandir(self.where):
            if not entry.name.startswith(WANT_PREFIX) or (self._want and Path(entry.path) == self._want[1]):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    info = json.loads(os.pread(fd, 4096, 0))
                    kept.update(dict.fromkeys(info["chips"], str(info["purpose"])))
                except (ValueError, KeyError, TypeError):  # not ours to read: keep every chip for it
                    kept.update(dict.fromkeys(self.candidates, "another task"))
            else:
                Path(entry.path).unlink(missing_ok=True)  # its task died: the kernel dropped the lock
            finally:
                os.close(fd)
        return kept

    def _round(self, most: int, kept: dict[int, str]) -> list[int]:
        taken: list[int] = []
        self.why_not = {}
        read_this_round = False
        for chip in self.candidates:
            if len(taken) >= most:
                break
            if chip in self._fds:
                continue
            if chip in kept:
                self.why_not[chip] = f"left to {kept[chip]}, which wants more chips"
                continue
            fd = _open_lock(self.where, chip)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.why_not[chip] = f"leased by {_holder(fd)}"
                os.close(fd)
                continue
            # A chip just freed by another lease was busy with its work at the last read: read npu-smi afresh.
            # One shown busy outside our leases is read again only ``poll_s`` after the last read.
            if self.read_devices is not None and (
                chip not in self._busy or time.monotonic() - self._read_at >= self.poll_s
            ):
                if not read_this_round:  # one npu-smi call per round covers every chip
                    self._devices, self._read_at, read_this_round = self.read_devices(), time.monotonic(), True
                dev = find_device(self._devices, chip)
                self._busy.pop(chip, None)
                if not self.policy.is_idle(dev):
                    self._busy[chip] = f"busy outside our leases ({dev.status()}; need {self.policy.limits()})"
            if chip in self._busy:
                self.why_not[chip] = self._busy[chip]
                os.close(fd)  # closing drops the lock
                continue
            self._hold(fd, chip)
            taken.append(chip)
        return taken

    def _hold(self, fd: int, chip: int) -> None:
        """Say who holds the chip (for waiters and the log)."""
        info = {
            "purpose": self.purpose,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            self._fds[chip] = fd
            self._since[chip] = time.monotonic()
            self.used.append(chip)
        log.info("Leased NPU %d for %s (waited %.0f s)", chip, self.purpose, time.monotonic() - self._start)

    @contextlib.contextmanager
    def tools_hold(self, chip: int) -> Iterator[None]:
        """Tools started in this block (in this thread) hold ``chip``'s lease file open: it lasts while one of
        them still runs, even if we die first. Only that chip's: another chip released early is free at once."""
        with self._lock:
            fd = self._fds[chip]
        with inherit_fds(fd):
            yield

    def release(self, chip: int) -> None:
        """Let ``chip`` go (a no-op if not held)."""
        with self._lock:
            fd = self._fds.pop(chip, None)
            since = self._since.pop(chip, time.monotonic())
        if fd is None:
            return
        try:
            # Cleared while still locked: after the unlock the file may already be the next holder's.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        log.info("Released NPU %d (%s) after %.0f s", chip, self.purpose, time.monotonic() - since)

    def close(self) -> None:
        self._wanting(False)
        for chip in self.held:
            self.release(chip)
