"""Released torch pickles -> tokenizer directories (safetensors): the one place that reads them.

    python -m data_pipelines.convert_weights --kind=seed --src=seed_quantizer.pt \
        --eva=eva_vit_g.pth --unclip=UNCLIP_DIR --out=tokenizers/image [--config=seed.json]
    python -m data_pipelines.convert_weights --kind=speechtokenizer \
        --src=speechtokenizer_hubert_avg/SpeechTokenizer.pt --out=tokenizers/speech \
        [--config=.../config.json] [--num_layers=4]
    python -m data_pipelines.convert_weights --from_mio=MIO_DIR [--out=OUT] [--eva=eva_vit_g.pth] \
        [--seed_config=seed.json]

Pickles are read with `torch.load(weights_only=True, map_location="cpu")`, which refuses anything
but tensors and plain containers; convert trusted files anyway. seed: SEED-LLaMA's quantizer holds
everything but the EVA ViT-g weights, which LAVIS ships as `eva_vit_g.pth` (`--eva`); `--unclip`
is a diffusers `StableUnCLIPImg2ImgPipeline` folder (stable-diffusion-2-1-unclip) copied to
OUT/unclip for decoding. Every source key must be used and every weight filled: otherwise one line
names the keys (`--allow_unused=PREFIX,...` drops more source families on purpose). Errors exit 2.

`--from_mio=DIR` converts every tokenizer inside a released MIO directory (m-a-p/MIO-7B-Base or
-Instruct, local or gs://) into mio_jax's tokenizer layout (mio_jax/tokens/tokenizers.py), by
default in
`DIR/mio_jax_tokenizers`, where `mio-generate --model=DIR` and `mio-evaluate --model=DIR` look:

    OUT/text     DIR's Yi `tokenizer.model` (sentencepiece) with its added-token files, checked
                 against the vocab layout config.json's MIO keys describe (hf_vocab)
    OUT/image    seed-tokenizer-2/seed_quantizer.pt + stable-diffusion-2-1-unclip/ (--kind=seed;
                 `--eva` when the quantizer lacks the EVA ViT-g weights; `--seed_config` only for
                 a SEED other than SEED-LLaMA's)
    OUT/speech   SpeechTokenizer/config.json + SpeechTokenizer.pt (--kind=speechtokenizer, MIO's
                 4 RVQ layers)
    OUT/video    keyframe settings only: `mio_scene`, MIO's extract_frames (scene cuts as
                 PySceneDetect's ContentDetector finds them, uniform frames when there is none)

Each tokenizer's codebook must match the layout's image / speech code count.
"""

from __future__ import annotations

import json
import re
import sys

from mio_jax.cli import entry
from mio_jax.errors import UserError
from mio_jax.io import paths

KINDS = ("seed", "speechtokenizer")

# SEED key prefix (regex) -> adapter key prefix, first match wins. EVA's q_bias/v_bias become one
# qkv bias (`seed_state`).
_VIT, _LAYER = r"visual_encoder\.blocks\.(\d+)\.", r"vision.encoder.layers.\1."
_QF, _QLAYER = r"Qformer\.bert\.encoder\.layer\.(\d+)\.", r"qformer.encoder.layer.\1."
SEED_RENAMES = [
  (r"visual_encoder\.cls_token", "vision.embeddings.class_embedding"),
  (r"visual_encoder\.pos_embed", "vision.embeddings.position_embedding"),
  (r"visual_encoder\.patch_embed\.proj\.", "vision.embeddings.patch_embedding."),
  (_VIT + r"norm1\.", _LAYER + "layer_norm1."),
  (_VIT + r"norm2\.", _LAYER + "layer_norm2."),
  (_VIT + r"attn\.qkv\.weight", _LAYER + "self_attn.qkv.weight"),
  (_VIT + r"attn\.proj\.", _LAYER + "self_attn.projection."),
  (_VIT + r"mlp\.", _LAYER + "mlp."),
  (r"ln_vision\.", "vision.post_layernorm."),
  (r"Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.layernorm."),
  (_QF + r"(attention|crossattention)\.self\.", _QLAYER + r"\2.attention."),
  (_QF + r"(attention|crossattention)\.output\.", _QLAYER + r"\2.output."),
  (_QF + r"(intermediate_query|output_query)\.", _QLAYER + r"\2."),
  (r"quantize\.embedding\.weight", "codebook.weight"),
  (r"(query_tokens|pos_embed_image)$", r"\1"),
  (r"(encode_task_layer|decode_task_layer|blocks_image|image_down|distill_image_proj)\.", r"\1."),
]
QV_BIAS = re.compile(_VIT + r"attn\.([qv])_bias")
# Source families SEED's checkpoints carry that tokenizing and decoding never run.
SEED_UNUSED = {
  r"Qformer\.bert\.embeddings\.(position_ids|word_embeddings|position_embeddings)": (
    "Q-Former text embeddings"
  ),
  _QF + r"(intermediate|output)\.": "Q-Former text branch",
  r"Qformer\.cls\.": "Q-Former LM head",
  r"(vision_proj|text_proj|itm_head)\.|temp$": "BLIP-2 contrastive/matching heads",
  r"pos_embed$|blocks\.\d+\.": "SEED's training-only Q-Former reconstruction branch (recon_s)",
}


def load_pickle(path: str) -> dict:
  """A flat {name: tensor} state dict from a torch pickle, loaded without running code."""
  import torch

  if not paths.exists(path):
    raise UserError(f"no such file: {path}")
  try:
    with paths.open_file(path, "rb") as f:
      state = torch.load(f, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"{path}: not a loadable torch state dict ({first})") from None
  if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
    top = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
    raise UserError(f"{path}: expected a flat {{name: tensor}} state dict, got {top}")
  return state


def _names(keys, limit: int = 8) -> str:
  keys = sorted(keys)
  more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
  return ", ".join(keys[:limit]) + more


def fill_module(module, state: dict, what: str) -> None:
  """Loads `state` into `module` after checking names and shapes both ways (UserError)."""
  expected = module.state_dict()
  missing, extra = set(expected) - set(state), set(state) - set(expected)
  if missing or extra:
    parts = [f"missing {len(missing)}: {_names(missing)}"] if missing else []
    parts += [f"unexpected {len(extra)}: {_names(extra)}"] if extra else []
    raise UserError(f"{what}: weights do not match the model ({'; '.join(parts)})")
  bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
  if bad:
    k = sorted(bad)[0]
    raise UserError(
      f"{what}: {len(bad)} shape mismatches, e.g. {k} {tuple(state[k].shape)} vs "
      f"{tuple(expected[k].shape)} (does the config match the checkpoint?)"
    )
  module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def seed_state(source: dict, allow_unused=()) -> tuple[dict, dict]:
  """SEED's keys -> the adapter's; -> (state, {reason: number of source keys dropped})."""
  import torch

  out, dropped, unexpected, qv = {}, {}, [], {}
  for key, value in source.items():
    if m := QV_BIAS.fullmatch(key):
      qv.setdefault(m.group(1), {})[m.group(2)] = value
      continue
    for pattern, repl in SEED_RENAMES:
      if m := re.match(pattern, key):
        out[m.expand(repl) + key[m.end() :]] = value
        break
    else:
      reason = next((r for p, r in SEED_UNUSED.items() if re.match(p, key)), None)
      if reason is None and any(key.startswith(p) for p in allow_unused):
        reason = "--allow_unused"
      if reason is None:
        unexpected.append(key)
      else:
        dropped[reason] = dropped.get(reason, 0) + 1
  if unexpected:
    raise UserError(
      f"unexpected SEED keys {len(unexpected)}: {_names(unexpected)} "
      "(drop on purpose with --allow_unused=PREFIX,...)"
    )
  for layer, biases in qv.items():
    if set(biases) != {"q", "v"}:
      (have,) = biases
      raise UserError(f"visual_encoder.blocks.{layer}.attn has {have}_bias but not the other")
    q, v = biases["q"], biases["v"]
    # EVA has no key bias: transformers' Blip2Attention keeps one qkv bias with zeros for k.
    out[f"vision.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
      [q, torch.zeros_like(q), v]
    )
  return out, dropped


def _check_unclip(directory: str, embed_dim: int) -> None:
  index = paths.join(directory, "model_index.json")
  if not paths.exists(index):
    raise UserError(
      f"--unclip={directory}: no model_index.json (want a diffusers save_pretrained dir)"
    )
  cls = json.loads(paths.read_text(index)).get("_class_name")
  if cls != "StableUnCLIPImg2ImgPipeline":
    raise UserError(f"--unclip={directory}: a {cls}, not a StableUnCLIPImg2ImgPipeline")
  norm = json.loads(paths.read_text(paths.join(directory, "image_normalizer", "config.json")))
  if norm.get("embedding_dim") != embed_dim:
    raise UserError(
      f"--unclip={directory}: image embeddings of {norm.get('embedding_dim')} dims, "
      f"SEED's decoder makes {embed_dim}"
    )
  if not paths.glob(paths.join(directory, "unet"), "*.safetensors"):
    raise UserError(f"--unclip={directory}: unet/ holds no .safetensors (re-save with diffusers)")


def convert_seed(src, out, eva=None, unclip=None, config=None, allow_unused=(), stream=sys.stdout):
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer, modules

  m = modules()
  try:
    cfg = m.SEEDConfig.from_dict(json.loads(paths.read_text(config)) if config else {})
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f"--config={config}: {e}") from None
  if unclip:
    _check_unclip(unclip, cfg.image_embed_dim)
  source = load_pickle(src)
  if not eva and not any(k.startswith("visual_encoder.") for k in source):
    raise UserError(
      f"{src} holds no EVA ViT-g weights (visual_encoder.*): pass --eva=eva_vit_g.pth "
      "(LAVIS' BLIP-2 release, which SEED downloads at run time)"
    )
  if eva:
    prefix = "visual_encoder."
    vit = {k if k.startswith(prefix) else prefix + k: v for k, v in load_pickle(eva).items()}
    twice = set(vit) & set(source)
    if twice:
      raise UserError(f"--eva and --src both hold {len(twice)} keys: {_names(twice)}")
    source.update(vit)
  state, dropped = seed_state(source, allow_unused)
  model = m.SEEDQuantizer(cfg)
  fill_module(model, state, f"SEED ({src})")
  SEEDImageTokenizer(model, unclip=unclip, device="cpu").save(out)
  print(f"seed: {len(state)} tensors from {len(source)} source keys -> {out}", file=stream)
  for reason, n in sorted(dropped.items()):
    print(f"  dropped {n} keys: {reason}", file=stream)
  if not unclip:
    print("  no --unclip: this tokenizer encodes only (decode raises)", file=stream)


def convert_speechtokenizer(src, out, config=None, num_layers=4, stream=sys.stdout):
  from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter

  config = config or paths.join(paths.parent(src), "config.json")
  if not paths.exists(config):
    raise UserError(f"no SpeechTokenizer config {config} (pass --config=.../config.json)")
  try:
    cfg = json.loads(paths.read_text(config))
    tok = SpeechTokenizerAdapter.from_config(cfg, num_layers=num_layers)
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"--config={config}: not a SpeechTokenizer config ({e})") from None
  state = load_pickle(src)
  fill_module(tok.model, state, f"SpeechTokenizer ({src})")
  tok.save(out)
  print(f"speechtokenizer: {len(state)} tensors, {num_layers} layers -> {out}", file=stream)


MIO_PARTS = {  # MIO's relative paths (image_tokenizer/configs/seed_llama_tokenizer.yaml,
  # tokenization_mio.py load_speech_tokenizer)
  "seed": "seed-tokenizer-2/seed_quantizer.pt",
  "unclip": "stable-diffusion-2-1-unclip",
  "speech_config": "SpeechTokenizer/config.json",
  "speech": "SpeechTokenizer/SpeechTokenizer.pt",
  "text": "tokenizer.model",
}


def convert_mio(mio_dir, out=None, eva=None, seed_config=None, stream=sys.stdout) -> str:
  """Every tokenizer of a released MIO directory -> `out` (default DIR/mio_jax_tokenizers)."""
  from mio_jax.hf import release_vocab as hf_vocab

  if not paths.exists(paths.join(mio_dir, "config.json")):
    raise UserError(f"--from_mio={mio_dir}: no config.json (want MIO's released directory)")
  missing = [rel for rel in MIO_PARTS.values() if not paths.exists(paths.join(mio_dir, rel))]
  if missing:
    raise UserError(f"--from_mio={mio_dir}: lacks {', '.join(missing)} (MIO's release ships them)")
  for flag, path in (("--eva", eva), ("--seed_config", seed_config)):
    if path and not paths.exists(path):
      raise UserError(f"{flag}: no such file: {path}")
  try:
    vocab = hf_vocab.load_vocab(mio_dir)  # config.json's MIO keys vs the added tokens
  except ValueError as e:
    raise UserError(str(e)) from None
  if vocab is None or vocab.layout_name != "mio":
    raise UserError(f"{paths.join(mio_dir, 'config.json')}: no MIO vocab keys (text_vocab_size...)")
  out = out or paths.join(mio_dir, hf_vocab.TOKENIZERS_DIR)
  part = lambda name: paths.join(mio_dir, MIO_PARTS[name])
  # Sizes first, so nothing is written for a directory whose tokenizers do not fit its vocab.
  speech_cfg = json.loads(paths.read_text(part("speech_config")))
  if speech_cfg.get("codebook_size") != vocab.speech_codes:
    raise UserError(
      f"{part('speech_config')}: codebook_size {speech_cfg.get('codebook_size')}, but "
      f"config.json's speech_vocab_size is {vocab.speech_layers} x {vocab.speech_codes}"
    )
  seed_codes = json.loads(paths.read_text(seed_config)) if seed_config else {}
  seed_codes = seed_codes.get("codebook_size", _seed_default("codebook_size"))
  if seed_codes != vocab.image_codes:
    raise UserError(
      f"SEED codebook of {seed_codes} codes, but config.json's visual_vocab_size is "
      f"{vocab.image_codes}"
    )
  _convert_text(vocab, mio_dir, paths.join(out, "text"), stream)
  convert_seed(
    part("seed"), paths.join(out, "image"), eva, part("unclip"), seed_config, stream=stream
  )
  convert_speechtokenizer(
    part("speech"), paths.join(out, "speech"), part("speech_config"), vocab.speech_layers, stream
  )
  # Video = keyframes through the image tokenizer, chosen as MIO's extract_frames chooses them
  # (scene-detected, uniform when no cut is found): only settings, no weights.
  from data_pipelines.tokenizers.video import KeyframeVideoTokenizer

  KeyframeVideoTokenizer(image=None, method="mio_scene").save(paths.join(out, "video"))
  print(f"tokenizers of {mio_dir} -> {out}", file=stream)
  return out


def _seed_default(field: str):
  from data_pipelines.tokenizers.seed_tokenizer import modules

  return getattr(modules().SEEDConfig(), field)


def _convert_text(vocab, mio_dir: str, out: str, stream) -> None:
  """Yi's sentencepiece model as the text tokenizer (mio_jax.tokens.tokenizers TEXT_KIND); the added
  tokens are not pieces of it: their ids are the layout's (media codes, MIO's specials)."""
  from data_pipelines.tokenizers.text import SentencePieceTokenizer
  from mio_jax.hf import release_vocab as hf_vocab

  try:
    tok = SentencePieceTokenizer(paths.join(mio_dir, MIO_PARTS["text"]))
  except ValueError as e:
    raise UserError(str(e)) from None
  if tok.vocab_size > vocab.text_size:
    raise UserError(
      f"{tok.model_path}: {tok.vocab_size} pieces, but config.json's text_vocab_size is "
      f"{vocab.text_size}"
    )
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor(model_proto=paths.read_bytes(tok.model_path))
  for role in ("<|im_start|>", "<|im_end|>"):  # MIO's chat roles are Yi's own pieces
    got, want = sp.PieceToId(role), vocab.special_id(role)
    if got != want:
      raise UserError(f"{tok.model_path}: piece {role} has id {got}, MIO's layout uses {want}")
  copied = hf_vocab.copy_tokenizer(vocab, mio_dir, out)
  print(f"text: {tok.vocab_size} pieces ({', '.join(copied)}) -> {out}", file=stream)


def convert(kind, src, out, eva=None, unclip=None, config=None, num_layers=4, allow_unused=()):
  if kind not in KINDS:
    raise UserError(f"unknown --kind {kind!r}; known: {', '.join(KINDS)}")
  for flag, path in (("--src", src), ("--eva", eva), ("--config", config)):
    if path and not paths.exists(path):  # before the seconds torch takes to import
      raise UserError(f"{flag}: no such file: {path}")
  if unclip and not paths.isdir(unclip):
    raise UserError(f"--unclip: no such directory: {unclip}")
  if kind == "seed":
    convert_seed(src, out, eva, unclip, config, allow_unused)
  else:
    if eva or unclip or allow_unused:
      raise UserError("--eva, --unclip and --allow_unused are for --kind=seed")
    convert_speechtokenizer(src, out, config, num_layers)


def main(argv=None) -> int:
  p = entry.ArgumentParser(
    prog="data_pipelines.convert_weights", description=__doc__.split("\n")[0]
  )
  p.add_argument("--kind", default=None, help=" | ".join(KINDS))
  p.add_argument("--src", default=None, help="the released .pt (SEED: seed_quantizer.pt)")
  p.add_argument(
    "--out",
    default=None,
    help="tokenizer directory to write (local or gs://; --from_mio: DIR/mio_jax_tokenizers)",
  )
  p.add_argument("--from_mio", default=None, help="a released MIO directory: all its tokenizers")
  p.add_argument("--eva", default=None, help="seed: LAVIS' eva_vit_g.pth (EVA ViT-g weights)")
  p.add_argument("--unclip", default=None, help="seed: StableUnCLIPImg2ImgPipeline directory")
  p.add_argument("--config", default=None, help="seed: SEEDConfig JSON; speech: config.json")
  p.add_argument("--seed_config", default=None, help="--from_mio: SEEDConfig JSON (default SEED's)")
  p.add_argument("--num_layers", type=int, default=4, help="speechtokenizer: RVQ layers kept")
  p.add_argument("--allow_unused", default="", help="seed: source key prefixes to drop")
  a = p.parse_args(argv)
  allow = tuple(x for x in a.allow_unused.split(",") if x)
  if a.from_mio:
    if a.kind or a.src or a.unclip or a.config or allow:
      p.error("--from_mio takes only --out, --eva and --seed_config")
  elif not (a.kind and a.src and a.out):
    p.error("pass --from_mio=MIO_DIR, or --kind, --src and --out")
  elif a.seed_config:
    p.error("--seed_config is for --from_mio (use --config)")
  try:
    if a.from_mio:
      convert_mio(a.from_mio, a.out, a.eva, a.seed_config)
    else:
      convert(a.kind, a.src, a.out, a.eva, a.unclip, a.config, a.num_layers, allow)
  except (UserError, paths.PathError, FileNotFoundError) as e:
    p.error(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main())
