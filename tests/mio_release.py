"""A tiny directory laid out exactly as MIO's release (m-a-p/MIO-7B-Base / -Instruct) ships it.

`write_mio_release(directory, weights="bin")` writes:

- `config.json`: a LlamaConfig (hidden 32, 2 layers, MIO's 76,294 ids) plus MIO's vocab keys
  (`MIO_KEYS`), as transformers saves it;
- the weights of a random `LlamaForCausalLM` with O(1) entries: `weights="bin"` splits its state
  dict over two `pytorch_model-0000k-of-00002.bin` files (torch.save, as the release) plus
  `pytorch_model.bin.index.json`; `weights="safetensors"` is transformers' `save_pretrained`;
- Yi's tokenizer files (tests/yi_tokenizer.py: a real 64,000-piece sentencepiece model, MIO's
  added tokens);
- `seed-tokenizer-2/seed_quantizer.pt` (SEED's key names, tests/test_seed_tokenizer.py) with
  MIO's 8,192 codes, `stable-diffusion-2-1-unclip/` (a tiny real diffusers pipeline), and
  `SpeechTokenizer/config.json` + `SpeechTokenizer.pt` (the adapter's = SpeechTokenizer's key names)
  with MIO's 1,024 codes per layer.

The SEED dimensions are tiny, so converting needs `--seed_config=<SEED_CONFIG_FILE>`, written next
to (not inside) the directory by `write_mio_release`. Test-only.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import torch
import transformers

from tests.test_seed_tokenizer import TINY as SEED_TINY
from tests.test_seed_tokenizer import seed_checkpoint, tiny_unclip
from tests.test_tokenizers_adapters import ST_CONFIG
from tests.yi_tokenizer import write_yi_tokenizer

# MIO's config.json vocab keys, as its release writes them.
MIO_KEYS = {
  "text_vocab_size": 64_000,
  "num_new_special_tokens": 6,
  "visual_vocab_size": 8_192,
  "speech_vocab_size": 4_096,
  "speech_placeholder_id": 64_000,
  "speech_eos_id": 64_001,
  "image_placeholder_id": 64_002,
  "speech_bos_id": 64_003,
  "image_eos_id": 64_004,
  "image_bos_id": 64_005,
}
SEED = {**SEED_TINY, "codebook_size": MIO_KEYS["visual_vocab_size"]}
SPEECH = {**ST_CONFIG, "codebook_size": MIO_KEYS["speech_vocab_size"] // 4}
SEED_CONFIG_FILE = "seed_tiny.json"  # beside the release directory
SHARDS = 2


def llama(seed: int = 0) -> transformers.LlamaForCausalLM:
  """A tiny random LlamaForCausalLM with MIO's vocab and config keys; O(1) weights so errors
  show."""
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(
    vocab_size=76_294,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=5_000_000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    attn_implementation="eager",
    **MIO_KEYS,
  )
  config.architectures = ["LlamaForCausalLM"]
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, w in model.named_parameters():
      if name.endswith("norm.weight"):
        w.copy_(1.0 + 0.3 * torch.randn_like(w))
      else:
        w.copy_(torch.randn_like(w) / w.shape[-1] ** 0.5)
  return model


def bin_shard_names(n: int = SHARDS) -> list[str]:
  return [f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin" for i in range(n)]


def write_bin_weights(model, directory: pathlib.Path, n: int = SHARDS) -> None:
  """The state dict split in order over `n` torch.save shards, plus the index (as HF writes it)."""
  state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
  names = list(state)
  per = -(-len(names) // n)
  weight_map, total = {}, 0
  for i, file in enumerate(bin_shard_names(n)):
    shard = {k: state[k] for k in names[i * per : (i + 1) * per]}
    torch.save(shard, directory / file)
    weight_map.update({k: file for k in shard})
    total += sum(t.numel() * t.element_size() for t in shard.values())
  index = {"metadata": {"total_size": total}, "weight_map": weight_map}
  (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def write_tokenizer_parts(directory: pathlib.Path, cache: pathlib.Path) -> None:
  """Yi's files and the three tokenizer folders; built once into `cache`, then copied."""
  if not (cache / "done").exists():
    cache.mkdir(parents=True, exist_ok=True)
    write_yi_tokenizer(cache / "yi")
    (cache / "seed-tokenizer-2").mkdir(exist_ok=True)
    torch.save(seed_checkpoint(SEED), cache / "seed-tokenizer-2" / "seed_quantizer.pt")
    unclip = tiny_unclip(cache / "pipe", SEED["image_embed_dim"])
    shutil.move(unclip, cache / "stable-diffusion-2-1-unclip")
    from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter

    (cache / "SpeechTokenizer").mkdir(exist_ok=True)
    (cache / "SpeechTokenizer" / "config.json").write_text(json.dumps(SPEECH))
    speech = SpeechTokenizerAdapter.from_config(SPEECH, num_layers=4, seed=3)
    torch.save(speech.model.state_dict(), cache / "SpeechTokenizer" / "SpeechTokenizer.pt")
    (cache / "done").write_text("")
  for f in (cache / "yi").iterdir():
    shutil.copy(f, directory / f.name)
  for sub in ("seed-tokenizer-2", "stable-diffusion-2-1-unclip", "SpeechTokenizer"):
    shutil.copytree(cache / sub, directory / sub)


def write_mio_release(
  directory, weights: str = "bin", cache=None, seed: int = 0
) -> transformers.LlamaForCausalLM:
  """MIO's released layout in `directory` (see module doc) → the torch model it holds."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  model = llama(seed)
  if weights == "bin":
    model.config.save_pretrained(directory)
    write_bin_weights(model, directory)
  elif weights == "safetensors":
    model.save_pretrained(directory)
  else:
    raise ValueError(f"weights {weights!r}: bin or safetensors")
  if cache is not None:
    write_tokenizer_parts(directory, pathlib.Path(cache))
    (directory.parent / SEED_CONFIG_FILE).write_text(json.dumps(SEED))
  return model
