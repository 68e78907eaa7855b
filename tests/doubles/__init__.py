"""Test doubles for the Ascend toolchain (atc, npu-smi, ais_bench, set_env.sh): test equipment only.

Nothing in the product ships or calls them; tests point ``cann_env`` at ``set_env.sh`` here, which puts
``bin/`` on PATH and this folder on PYTHONPATH (for ``python -m ais_bench``). They reproduce the
documented behaviour in shared/toolchain-contract.md and record the argv they receive.
"""
