"""Test doubles for the Ascend toolchain (atc, npu-smi, ais_bench, set_env.sh): test equipment only.

Nothing in the product ships or calls them; tests point ``cann_env`` at ``set_env.sh`` here, which puts
``bin/`` on PATH and this folder on PYTHONPATH (for ``python -m ais_bench``). They reproduce the
documented behaviour in shared/toolchain-contract.md and the real ais_bench frontend (each fact is cited
with its source file and line in ``ais_bench/__init__.py``), and record the argv they receive.

A fake host: ``TWINS_FAKE_NPUS=N`` chips in ``npu-smi info``; with ``FAKE_NPU_LOCK_DIR`` set, ais_bench holds
a lock per chip while it runs (a second process on the same chip fails loudly; npu-smi shows the chip
busy); ``TWINS_FAKE_DELAYS=realistic`` (and ``TWINS_FAKE_TIME_SCALE``) makes the tools take scaled-down
real times. ``lease_holder.py`` is a task that leases a chip, for the device-lease tests.
"""
