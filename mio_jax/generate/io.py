"""Checkpoint → ready-to-sample model, and generated segments → files (text, PNG, WAV, frames).

`load_model(workdir)` reads the checkpoint's `meta` (training config, vocab fingerprint, step),
rebuilds the ModelConfig/Vocab from the config's model name and overrides, restores only the
params (`checkpoint_params.restore_params` on `jax.eval_shape` of the model init, so no random init
runs) and loads the tokenizers the data was made with (`<data_dir>/tokenizers` unless told
otherwise). Tokenizer and output directories may be gs:// URLs. `tensor`/`dtype` load the params
sharded over all devices (fsdp x tensor, the training rules) in bf16/f32
(mio_jax/parallel/placement.py);
models over ~1B params get that by default (bf16). Evaluation gets it through
`load_model(..., tensor, dtype)`.
`load_hf_model(dir)` is the same for an HF directory as MIO releases it (`--model=DIR`): params via
`trained.load_hf_model`, tokenizers from `DIR/mio_jax_tokenizers` (written by
`python -m data_pipelines.convert_weights --from_mio=DIR`) unless told otherwise.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from mio_jax.checkpoint import params as checkpoint_params
from mio_jax.checkpoint import trained
from mio_jax.errors import UserError
from mio_jax.generate.segments import Segment
from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.io import paths
from mio_jax.io.media import read_image, read_video, read_wav, write_image, write_wav
from mio_jax.model.architecture import ModelConfig
from mio_jax.tokens.layouts import Builder
from mio_jax.tokens.tokenizers import Tokenizers, load_tokenizers
from mio_jax.tokens.vocab import Vocab

SFT_STAGE = 4


@dataclasses.dataclass
class Loaded:
  params: dict
  model_cfg: ModelConfig
  vocab: Vocab
  tokenizers: Tokenizers
  builder: Builder  # the training layouts over this text tokenizer and vocab
  config: dict  # the training config (plain dict)
  step: int
  step_dir: str
  placement: object = None  # mio_jax.parallel.placement.Placement when sharded / cast

  @property
  def is_sft(self) -> bool:
    return int(self.config.get("stage") or 0) == SFT_STAGE


def tokenizer_dir(config: dict, override: str | None) -> str:
  if override:
    return override
  data_dir = config.get("data_dir") or ""
  if not data_dir:
    raise ValueError("the checkpoint's config has no data_dir; pass --tokenizers=DIR")
  return paths.join(data_dir, "tokenizers")


def load_model(
  workdir: str,
  step: int | None = None,
  tokenizers: str | None = None,
  *,
  tensor: int | None = None,
  dtype: str | None = None,
) -> Loaded:
  run = trained.load_trained(workdir, step, tensor=tensor, dtype=dtype, shard_big=True)
  return _loaded(run, tokenizer_dir(run.config, tokenizers))


def hf_tokenizer_dir(model_dir: str, override: str | None) -> str:
  if override:
    return override
  directory = paths.join(model_dir, hf_vocab.TOKENIZERS_DIR)
  if not paths.isdir(directory):
    raise UserError(
      f"{directory} not found: convert the tokenizers of {model_dir} first: python -m "
      f"data_pipelines.convert_weights --from_mio={model_dir} (or pass --tokenizers=DIR)"
    )
  return directory


def load_hf_model(
  model_dir: str,
  tokenizers: str | None = None,
  *,
  tensor: int | None = None,
  dtype: str | None = None,
) -> Loaded:
  """An HF model directory as released (MIO-7B-Base/-Instruct) → Loaded; step 0."""
  if not paths.exists(paths.join(model_dir, "config.json")):
    raise UserError(f"--model={model_dir}: no config.json (want an HF model directory)")
  toks_dir = hf_tokenizer_dir(model_dir, tokenizers)  # checked before the (slow) weight read
  run = trained.load_hf_model(model_dir, tensor=tensor, dtype=dtype)
  return _loaded(run, toks_dir)


def _loaded(run: trained.Trained, toks_dir: str) -> Loaded:
  toks = load_tokenizers(toks_dir)
  if toks.text is None:
    raise ValueError("the tokenizer directory has no text tokenizer")
  # Unsharded params go to host numpy (as before); sharded ones stay where they were restored.
  params = run.params if run.placement else jax.tree.map(np.asarray, run.params)
  return Loaded(
    params,
    run.model_cfg,
    run.vocab,
    toks,
    Builder(run.vocab, toks.text),
    run.config,
    run.step,
    run.step_dir,
    run.placement,
  )


def check_model_flags(workdir: str | None, model: str | None, step: int | None) -> None:
  """Exactly one of --workdir / --model (one line otherwise), before anything loads."""
  if bool(workdir) == bool(model):
    raise UserError("pass exactly one of --workdir=TRAINING_DIR or --model=HF_MODEL_DIR")
  if model and step is not None:
    raise UserError("--step picks a training checkpoint; drop it with --model")


def load_requested(
  workdir: str | None,
  model: str | None,
  step: int | None,
  tokenizers: str | None,
  *,
  tensor: int | None = None,
  dtype: str | None = None,
) -> Loaded:
  """The CLIs' `--workdir` checkpoint or `--model` HF directory (mio-generate, mio-evaluate)."""
  check_model_flags(workdir, model, step)
  if model:
    return load_hf_model(model, tokenizers, tensor=tensor, dtype=dtype)
  checkpoint_params.latest_step_dir(workdir)  # NoCheckpointError: one line, exit 2
  return load_model(workdir, step, tokenizers, tensor=tensor, dtype=dtype)


def read_media_files(image=None, speech=None, video=None) -> dict:
  """Decoded media (no tokenizer needed yet); UserError naming a file that cannot be read."""
  out = {"image": None, "speech": None, "video": None, "sample_rate": None}
  for flag, value, read in (
    ("image", image, read_image),
    ("speech", speech, read_wav),
    ("video", video, read_video),
  ):
    if not value:
      continue
    try:
      decoded = read(value)
    except (OSError, ValueError) as e:  # missing file, unknown format, corrupt data
      raise UserError(f"--{flag}={value}: cannot read it ({type(e).__name__}: {e})") from e
    if flag == "speech":
      out["speech"], out["sample_rate"] = decoded
    else:
      out[flag] = decoded
  return out


def underscore_flags(argv: list[str]) -> list[str]:
  """CLI sugar: `--max-new-tokens=8` means `--max_new_tokens=8` (absl flags use underscores)."""
  out = []
  for arg in argv:
    if arg.startswith("--") and not arg.startswith("---"):
      name, eq, value = arg[2:].partition("=")
      arg = "--" + name.replace("-", "_") + eq + value
    out.append(arg)
  return out


# ---- outputs --------------------------------------------------------------------------------
def decode_text(tokenizers, segments: list[Segment]) -> str:
  """Text segments → one string. The vocab's text range can be larger than the tokenizer (the demo's
  sentencepiece has fewer pieces than its 1,000 ids): ids it does not know are dropped."""
  ids = [s.ids for s in segments if s.modality == "text"]
  ids = np.concatenate(ids) if ids else np.zeros((0,), np.int32)
  ids = ids[ids < tokenizers.text.vocab_size]
  return tokenizers.text.decode(ids) if ids.size else ""


def write_segments(
  tokenizers, segments: list[Segment], out_dir: str, name: str = "out", video: bool = False
) -> list[str]:
  """Text → NAME.txt; image spans → NAME_imageK.png (or NAME_frames/frame_KKK.png with `video`);
  speech spans → NAME_speechK.wav (16-bit PCM). Returns the paths written, in that order."""
  paths.makedirs(out_dir)
  written = []
  text = decode_text(tokenizers, segments)
  if text or not any(s.modality in ("image", "speech") for s in segments):
    written.append(paths.join(out_dir, f"{name}.txt"))
    paths.write_text(written[-1], text + "\n")
  images = [s for s in segments if s.modality == "image" and s.complete]
  if video and images:
    paths.makedirs(paths.join(out_dir, f"{name}_frames"))
  for k, seg in enumerate(images):
    rel = f"{name}_frames/frame_{k:03d}.png" if video else f"{name}_image{k}.png"
    written.append(paths.join(out_dir, rel))
    write_image(written[-1], tokenizers.image.decode(seg.codes))
  speech = [s for s in segments if s.modality == "speech" and s.complete and s.codes.size]
  for k, seg in enumerate(speech):
    written.append(paths.join(out_dir, f"{name}_speech{k}.wav"))
    write_wav(written[-1], tokenizers.speech.decode(seg.codes), tokenizers.speech.sample_rate)
  return written
