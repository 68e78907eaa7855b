"""Twins-SVT-L inference validation: the Ascend ModelZoo recipe as a plain-Python library.

One module per recipe step (``preprocess``, ``export``, ``postprocess``, ``perf``), ``backends`` behind
one small interface, and ``store`` for results. No Airflow import anywhere in this package.
"""

__version__ = "0.1.0"

# Shapes and constants of the reference recipe (shared/toolchain-contract.md).
INPUT_NAME = "input"
OUTPUT_NAME = "output"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
NUM_CLASSES = 1000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BIN_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE * 4  # 602,112: raw float32 CHW, no header
DEFAULT_MODEL = "twins_svt_large"
