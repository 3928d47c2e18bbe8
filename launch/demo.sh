#!/usr/bin/env bash
# The demo curriculum on a laptop CPU: install, build the demo corpus, train MIO's four stages
# (alignment → interleaved → speech-enhanced → SFT), each starting from the previous stage's
# params, then sample every direction and print the evaluation table.
#
#   bash launch/demo.sh [--config.KEY=VALUE ...]     # overrides go to every stage
#   WORKDIR=workdir/demo DATA=demo_data SKIP_SETUP=1 bash launch/demo.sh --config.total_steps=20
#
# Rerunning resumes: finished stages are skipped by their own checkpoints, a killed stage
# continues from its newest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${WORKDIR:-workdir/demo}
DATA=${DATA:-demo_data}
PY=.venv/bin/python
# The demo is a CPU run: skip JAX's TPU probe (libtpu, when installed, prints a screen of noise).
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
start=$(date +%s)

[ "${SKIP_SETUP:-0}" = 1 ] || bash launch/setup.sh
[ -f "$DATA/corpus.json" ] || $PY -m data_pipelines.demo_corpus --out="$DATA"

prev=""
for n in 1 2 3 4; do
  echo "== stage $n ($(( $(date +%s) - start )) s elapsed) =="
  $PY -m mio_jax.main --config="configs/stage$n.py" --workdir="$WORKDIR/stage$n" \
      --config.data_dir="$DATA" ${prev:+--config.init_from="$prev"} "$@"
  prev="$WORKDIR/stage$n"
done

echo "== samples ($(( $(date +%s) - start )) s elapsed) =="
final="$WORKDIR/stage4"
samples="$WORKDIR/samples"
first() {  # first test-split media path of a JSONL field, e.g. first image_text image
  $PY -c "import json,sys; rows=[json.loads(l) for l in open('$DATA/raw/test.jsonl')];
print(next('$DATA/raw/'+r['$2'] for r in rows if r['type']=='$1'))"
}
$PY -m mio_jax.generate --workdir="$final" --image="$(first image_text image)" --output-modality=text --out="$samples/image_to_text"
$PY -m mio_jax.generate --workdir="$final" --prompt="a large red circle at the top left" --output-modality=image --out="$samples/text_to_image"
$PY -m mio_jax.generate --workdir="$final" --speech="$(first speech_text audio)" --output-modality=text --out="$samples/speech_to_text"
$PY -m mio_jax.generate --workdir="$final" --prompt="The blue square is below the green circle." --output-modality=speech --out="$samples/text_to_speech"
$PY -m mio_jax.generate --workdir="$final" --video="$(first video_text video)" --output-modality=text --out="$samples/video_to_text"

echo "== evaluation ($(( $(date +%s) - start )) s elapsed) =="
$PY -m mio_jax.evaluate --workdir="$final" --split=test --limit="${EVAL_LIMIT:-24}" \
    --out="$WORKDIR/eval.json"
echo "demo finished in $(( $(date +%s) - start )) s; samples in $samples, evaluation in $WORKDIR/eval.json"
