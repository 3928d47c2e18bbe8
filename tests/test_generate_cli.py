"""`python -m mio_jax.generate` on a tiny random checkpoint: prompts match the training layouts, and
PNG / WAV / text outputs are valid files."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(n_layers=2, d_model=64, n_heads=2, n_kv_heads=1, ffn_dim=128)


def demo_corpus(tmp_path_factory):
  """A scale-0.05 demo corpus, built once per session (test_evaluate.py uses the same folder)."""
  assert shutil.which("espeak-ng"), "espeak-ng is not installed (apt-get install espeak-ng)"
  out = tmp_path_factory.getbasetemp() / "eval_demo_corpus"
  if not (out / "corpus.json").exists():
    proc = subprocess.run(
      [
        sys.executable,
        "-m",
        "data_pipelines.demo_corpus",
        f"--out={out}",
        "--scale=0.05",
        f"--speech_cache={out}_cache",
        "--strict",
      ],
      cwd=ROOT,
      env={**os.environ, "PYTHONPATH": ROOT},
      capture_output=True,
      text=True,
      timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def write_checkpoint(workdir, data_dir, stage=None, fingerprint=None, step=3):
  """A randomly initialised tiny model saved as training saves it: state {params, step} + meta."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import stage1
  from mio_jax.checkpoint import manager as checkpoint
  from mio_jax.config import model_overrides
  from mio_jax.model.sizes import get_model
  from mio_jax.model.transformer import Transformer

  config = stage1.get_config("demo")
  for k, v in TINY.items():
    config.model_overrides[k] = v
  config.data_dir = str(data_dir)
  if stage is not None:
    config.stage = stage
  cfg, vocab = get_model(config.model, **model_overrides(config))
  params = nn.unbox(
    Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32))["params"]
  )
  manager = checkpoint.make_manager(str(workdir), 1, 2, async_save=False)
  meta = {
    "config": config.to_json_best_effort(),
    "vocab_fingerprint": fingerprint or vocab.fingerprint(),
    "step": step,
  }
  checkpoint.save(manager, step, {"params": params, "step": np.int32(step)}, None, meta, force=True)
  manager.wait_until_finished()
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return demo_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus):
  return write_checkpoint(tmp_path_factory.mktemp("ckpt"), corpus)


@pytest.fixture(scope="module")
def model(workdir):
  from mio_jax.generate import io

  return io.load_model(str(workdir))


def _cli(workdir, out, *args):
  proc = subprocess.run(
    [sys.executable, "-m", "mio_jax.generate", f"--workdir={workdir}", f"--out={out}", *args],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  paths = [line for line in proc.stdout.splitlines() if line.strip()]
  assert paths and all(os.path.isfile(p) and p.startswith(str(out)) for p in paths), proc.stdout
  return paths


def test_cli_writes_png_for_image_output(workdir, model, tmp_path):
  from PIL import Image

  paths = _cli(
    workdir,
    tmp_path,
    "--prompt=a small red circle at the top left",
    "--output-modality=image",
    "--cfg-scale=2.0",
    "--seed=1",
  )
  pngs = [p for p in paths if p.endswith(".png")]
  assert len(pngs) == 1
  with Image.open(pngs[0]) as im:
    im.load()
    side = model.tokenizers.image.image_size
    assert im.format == "PNG" and im.size == (side, side) and im.mode == "RGB"


def test_cli_writes_wav_for_speech_output(workdir, model, tmp_path):
  from scipy.io import wavfile

  paths = _cli(
    workdir,
    tmp_path,
    "--prompt=The red circle is round.",
    "--output_modality=speech",
    "--max_new_tokens=82",
  )
  wavs = [p for p in paths if p.endswith(".wav")]
  assert len(wavs) == 1
  rate, samples = wavfile.read(wavs[0])
  assert rate == model.tokenizers.speech.sample_rate
  assert samples.dtype == np.int16 and samples.ndim == 1 and samples.size > 0


def test_cli_writes_text_for_image_input_in_chat_layout(workdir, model, corpus, tmp_path):
  image = corpus / "raw" / "images" / "test" / "image_00000.png"
  paths = _cli(
    workdir, tmp_path, f"--image={image}", "--output-modality=text", "--max-new-tokens=12", "--chat"
  )
  assert [os.path.basename(p) for p in paths] == ["out.txt"]
  # The same greedy decode in process, from the same prompt layout: the file holds exactly its
  # decoded text (text-range ids through the sentencepiece model) and a final newline.
  from mio_jax.cli.generate import encode_prompt, read_inputs, sample

  media = read_inputs(model.tokenizers, image=str(image))
  prompt = encode_prompt(model, "", media, "text", chat=True)
  assert prompt[1] == model.vocab.special_id("<|im_start|>")  # --chat: the ChatML layout
  segments = sample(model, prompt, "text", max_new_tokens=12)
  ids = np.concatenate([s.ids for s in segments if s.modality == "text"])
  want = model.tokenizers.text.decode(ids[ids < model.tokenizers.text.vocab_size])
  assert want  # the untrained model still emits pieces the tokenizer knows
  with open(paths[0]) as f:
    assert f.read() == want + "\n"


def _records(builder):
  """Training records (from data_pipelines builders) for one input of each task."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 512, 32)
  speech = rng.integers(0, 256, (4, 9))
  video = rng.integers(0, 512, (4, 32))
  return (
    image,
    speech,
    video,
    {
      "caption": builder.image_caption(image, "a red circle")[0],
      "draw": builder.image_generation("a red circle", image)[0],
      "asr": builder.asr(speech, "the red circle")[0],
      "tts": builder.tts("the red circle", speech)[0],
      "video_caption": builder.video_caption(video, "a circle moves")[0],
    },
  )


def test_prompts_are_prefixes_of_the_training_records(model):
  from data_pipelines.builders import Image, Video
  from mio_jax.generate import prompting as P

  b = model.builder
  image, speech, video, records = _records(b)
  media = {
    "caption": P.Media(image=image),
    "asr": P.Media(speech=speech),
    "draw": P.Media(),
    "tts": P.Media(),
    "video_caption": P.Media(video=video),
  }
  texts = {"draw": "a red circle", "tts": "the red circle"}
  for task, record in records.items():
    prompt = P.build_prompt(b, task, media[task], texts.get(task, ""))
    assert len(prompt) < len(record) and np.array_equal(prompt, record[: len(prompt)]), task
  chat, mask = b.chat(
    [
      {"role": "user", "content": [Image(image), "Describe this image."]},
      {"role": "assistant", "content": "a red circle"},
    ]
  )
  prompt = P.build_prompt(b, "caption", P.Media(image=image), chat=True)
  assert np.array_equal(prompt, chat[: len(prompt)])
  assert mask[len(prompt)] == 1 and not mask[: len(prompt)].any()  # the reply follows the prompt
  chat = b.chat(
    [
      {"role": "user", "content": [Video(video), "Where does it go?"]},
      {"role": "assistant", "content": "to the left"},
    ]
  )[0]
  prompt = P.chat_prompt(b, P.Media(video=video), "Where does it go?")
  assert np.array_equal(prompt, chat[: len(prompt)])


def test_sft_checkpoints_default_to_chat_and_fingerprints_are_checked(tmp_path, corpus):
  from mio_jax.cli.generate import encode_prompt
  from mio_jax.generate import io
  from mio_jax.generate.prompting import Media

  sft = io.load_model(str(write_checkpoint(tmp_path / "sft", corpus, stage=4)))
  assert sft.is_sft
  ids = encode_prompt(sft, "", Media(image=np.zeros(32, np.int32)), "text")
  assert ids[1] == sft.vocab.special_id("<|im_start|>")
  ids = encode_prompt(sft, "", Media(image=np.zeros(32, np.int32)), "text", chat=False)
  assert ids[1] == sft.vocab.special_id("<image>")
  write_checkpoint(tmp_path / "other", corpus, fingerprint="0123456789abcdef")
  with pytest.raises(ValueError, match="fingerprint"):
    io.load_model(str(tmp_path / "other"))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  from mio_jax.generate import io

  with pytest.raises(FileNotFoundError, match="no finished checkpoint"):
    io.load_model(str(tmp_path))
