#!/usr/bin/env bash
# One NVIDIA GPU (H100): install the CUDA build of jax, then run the 1B train step, the data
# benchmark and MIO's tokenizer encoders in JAX; prints one JSON line per benchmark and writes
# them to $OUT_DIR. Under 10 minutes.
#
#   bash benchmarks/gpu.sh                      # fresh box: creates .venv-gpu, installs, runs
#   SKIP_INSTALL=1 PY=.venv/bin/python bash benchmarks/gpu.sh   # jax already sees the GPU
#   SHAPE=S0 ATTN=xla SKIP_INSTALL=1 JAX_PLATFORMS=cpu PY=.venv/bin/python bash benchmarks/gpu.sh
#                                               # dry run of the same commands on a CPU
#   (on a CPU add ENC_IMAGES=1 ENC_CLIPS=1: the released EVA ViT-g is ~0.5 TFLOP per image)
#
# MFU = analytic train FLOPs/token (PaLM convention) x tokens/s / 989 TFLOP/s (H100 SXM dense
# bf16; mio_jax/train/mfu.py picks the peak from the device kind).
set -euo pipefail
cd "$(dirname "$0")/.."

SHAPE=${SHAPE:-1B}            # benchmarks/train_step.py SHAPES: '1b' dims, seq 2,048, batch 8, bf16
ATTN=${ATTN:-dot_product_attention}   # jax.nn.dot_product_attention → cuDNN flash attention
REMAT=${REMAT:-none}          # 1.2B params + AdamW ≈ 20 GB; activations at 8 x 2,048 fit in 80 GB
STEPS=${STEPS:-10}
OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
PY=${PY:-.venv-gpu/bin/python}
ENC_IMAGES=${ENC_IMAGES:-32}  # batch of the tokenizer-encoder row: images (224 px) ...
ENC_CLIPS=${ENC_CLIPS:-32}    # ... and 5 s speech clips

if [ -z "${SKIP_INSTALL:-}" ]; then
  # jax 0.10.2's 'cuda12' extra pulls jax-cuda12-plugin[with-cuda]==0.10.2 and the CUDA 12 /
  # cuDNN wheels from the package index: no system CUDA toolkit needed, only the NVIDIA driver.
  [ -x "$PY" ] || python3 -m venv "$(dirname "$(dirname "$PY")")"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.txt 'jax[cuda12]==0.10.2'
fi

export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
mkdir -p "$OUT_DIR"
"$PY" -c 'import jax; print("devices:", jax.devices())' >&2

# Train step: real jitted step (fused chunked cross-entropy, AdamW, metrics), 2 warm-up steps.
timeout 420 "$PY" -m benchmarks.train_step --shape="$SHAPE" --steps="$STEPS" \
  --attention_impl="$ATTN" --remat="$REMAT" --loss_chunk=512 | tail -n 1 | tee "$OUT_DIR/train_$SHAPE.json"

# Input pipeline on the host CPUs (it must outrun the step: tokens/s ≥ the train step's).
timeout 90 "$PY" -m benchmarks.data_throughput --seconds=10 --scale=100 --skip_reference \
  | tail -n 1 | tee "$OUT_DIR/data.json"

# MIO's tokenizer encoders in JAX (mio_jax/encoders: SEED-Tokenizer's EVA ViT-g + Q-Former,
# SpeechTokenizer's encoder, 4 RVQ layers) at released sizes with random weights (no torch
# needed): images/s and seconds of speech/s, float32 and bf16, median of 3 after the jit warm-up.
timeout 300 "$PY" -m benchmarks.tokenize_throughput --jax_only --jax_images="$ENC_IMAGES" \
  --jax_clips="$ENC_CLIPS" --out="$OUT_DIR/tokenize_jax_encoders.json" | tail -n 1
