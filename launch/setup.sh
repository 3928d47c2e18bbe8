#!/usr/bin/env bash
# Create .venv and install mio_jax's dependencies.  --test adds the test extras (torch CPU, transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v espeak-ng >/dev/null 2>&1; then
  # The demo corpus synthesises speech with espeak-ng (Debian package).
  (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "warning: could not install espeak-ng" >&2
fi
if [ "${1:-}" = "--test" ] && ! command -v java >/dev/null 2>&1; then
  # pycocoevalcap's PTB tokenizer (COCO BLEU/CIDEr) runs the Stanford jar it ships with java.
  (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) || echo "warning: could not install java (PTB tokenizer falls back to Python)" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
req=requirements.txt
[ "${1:-}" = "--test" ] && req=requirements-test.txt
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -r "$req"
if [ "${1:-}" = "--test" ]; then
  # SpeechTokenizer (MIO's speech codec) without its trainer-only deps (torchaudio is several GB).
  .venv/bin/pip install -q --no-deps speechtokenizer==1.0.1
  # torchvision's transforms: the reference for MIO's SEED image transform (tests/test_mio_preprocessing.py).
  # PyPI's wheel links CUDA torch, so its C ops fail beside the CPU torch and a torchvision on sys.path
  # would break transformers' imports: kept in its own folder, where the test loads only the transforms.
  .venv/bin/pip install -q --no-deps --upgrade --target .venv/extras/torchvision torchvision==0.28.0
fi
