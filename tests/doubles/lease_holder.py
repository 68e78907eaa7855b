"""A task that leases an NPU chip and holds it until told to stop (test equipment only).

``python -m tests.doubles.lease_holder PURPOSE CHIP[,CHIP...] [WAIT_S]`` prints ``LEASED <chip>`` once it
holds a chip, then holds it until a line arrives on stdin (or stdin closes), and prints ``RELEASED``.
With ``--infer ARTIFACT INPUTS OUTPUT`` it runs the Ascend backend's inference on the leased chip instead
of waiting (the doubles must be on PATH/PYTHONPATH through ``cann_env``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from tests.doubles.helpers import SET_ENV
from twins_tasks.backends.ascend import AscendBackend
from twins_tasks.devices import lease_chip


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("purpose")
    p.add_argument("chips", type=lambda text: [int(c) for c in text.split(",")])
    p.add_argument("--wait", type=float, default=30.0)
    p.add_argument("--idle-check", action="store_true", help="read the fake npu-smi for the idle check")
    p.add_argument("--infer", nargs=3, metavar=("ARTIFACT", "INPUTS", "OUTPUT"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    backend = AscendBackend(cann_env=str(SET_ENV), soc_version="Ascend310P3", idle_wait_s=0)
    read = backend.npu_devices if args.idle_check else None
    with lease_chip(args.chips, purpose=args.purpose, read_devices=read, wait_s=args.wait, poll_s=0.05) as chip:
        print(f"LEASED {chip}", flush=True)
        if args.infer:
            artifact, inputs, output = args.infer
            backend.with_device(chip).infer(artifact, inputs, 1, output, args.purpose, "TXT")
        else:
            sys.stdin.readline()
    print("RELEASED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
