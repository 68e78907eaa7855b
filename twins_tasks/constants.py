"""The recipe's fixed facts (shared/toolchain-contract.md) and the project's limits: the bottom of the import graph.

Nothing here imports anything of ours; every other module takes these from here.
"""

from __future__ import annotations

# Shapes of the reference recipe.
INPUT_NAME = "input"
OUTPUT_NAME = "output"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
NUM_CLASSES = 1000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BIN_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE * 4  # 602,112: raw float32 CHW, no header
DEFAULT_MODEL = "twins_svt_large"
DEFAULT_OPSET = 11  # the recipe's opset; works with torch 2.14's TorchScript exporter (LayerNorm/GELU decomposed)

# Batch sizes: the recipe's six, and the range every entry point (flags, Params, backends, operators) accepts.
DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
MIN_BATCH_SIZE = 1
MAX_BATCH_SIZE = 256
# Logical NPU device ids: ais_bench --device takes 0 to 255 (its check_device_range_valid).
MAX_DEVICE_ID = 255

# ais_bench --outfmt values.
OUTPUT_FORMATS = ("BIN", "NPY", "TXT")

# Backends: "auto" = ascend where its toolchain is installed, else onnxruntime.
BACKEND_NAMES = ("auto", "ascend", "onnxruntime")
DEFAULT_CANN_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
# atc --precision_mode values; None = the recipe's command, which passes none (atc then uses force_fp16).
PRECISION_MODES = ("force_fp16", "allow_mix_precision", "allow_fp32_to_fp16", "must_keep_origin_dtype", "force_fp32")
# The DAG form's spelling of "pass no --precision_mode".
RECIPE_DEFAULT_PRECISION = "recipe default"
