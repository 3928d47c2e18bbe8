"""SEED-Tokenizer adapter on a tiny random model: a checkpoint in SEED's own key layout (written
here with torch.save) and a tiny unCLIP, converted, then decoded, saved and loaded. The encoder is
checked against a reference forward in test_seed_tokenizer_reference.py."""

import json

import numpy as np
import pytest
import torch

TINY = dict(
  image_size=28,
  patch_size=14,
  vision_width=32,
  vision_layers=2,
  vision_heads=2,
  vision_mlp=64,
  qformer_width=32,
  qformer_layers=2,
  qformer_heads=2,
  qformer_mlp=64,
  num_queries=8,
  codebook_size=16,
  codebook_dim=4,
  decoder_depth=2,
  decoder_heads=2,
  decoder_mlp=64,
  image_down=[16, 8, 4],
  image_embed_dim=16,
)


def seed_layout(c: dict) -> dict:
  """SEED checkpoint names -> shapes (Blip2QformerQuantizer + LAVIS' EVA), written out by hand."""
  d, h, n, cd = c["vision_width"], c["qformer_width"], c["num_queries"], c["codebook_dim"]
  grid = c["image_size"] // c["patch_size"]
  s = {
    "visual_encoder.cls_token": (1, 1, d),
    "visual_encoder.pos_embed": (1, grid * grid + 1, d),
    "visual_encoder.patch_embed.proj.weight": (d, 3, c["patch_size"], c["patch_size"]),
    "visual_encoder.patch_embed.proj.bias": (d,),
    "ln_vision.weight": (d,),
    "ln_vision.bias": (d,),
    "query_tokens": (1, n, h),
    "Qformer.bert.embeddings.LayerNorm.weight": (h,),
    "Qformer.bert.embeddings.LayerNorm.bias": (h,),
    "encode_task_layer.0.weight": (h, h),
    "encode_task_layer.0.bias": (h,),
    "encode_task_layer.2.weight": (cd, h),
    "encode_task_layer.2.bias": (cd,),
    "quantize.embedding.weight": (c["codebook_size"], cd),
    "decode_task_layer.0.weight": (cd, cd),
    "decode_task_layer.0.bias": (cd,),
    "decode_task_layer.2.weight": (h, cd),
    "decode_task_layer.2.bias": (h,),
    "pos_embed_image": (1, n, h),
    "distill_image_proj.weight": (c["image_embed_dim"], n * c["image_down"][-1]),
    "distill_image_proj.bias": (c["image_embed_dim"],),
  }
  for i in range(c["vision_layers"]):
    b, m = f"visual_encoder.blocks.{i}.", c["vision_mlp"]
    s |= {b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "norm2.weight": (d,)}
    s |= {b + "norm2.bias": (d,), b + "attn.qkv.weight": (3 * d, d), b + "attn.q_bias": (d,)}
    s |= {b + "attn.v_bias": (d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,)}
    s |= {b + "mlp.fc1.weight": (m, d), b + "mlp.fc1.bias": (m,), b + "mlp.fc2.weight": (d, m)}
    s |= {b + "mlp.fc2.bias": (d,)}
  for i in range(c["qformer_layers"]):
    b, m = f"Qformer.bert.encoder.layer.{i}.", c["qformer_mlp"]
    for att in ["attention"] + (["crossattention"] if i % 2 == 0 else []):
      kv = d if att == "crossattention" else h
      for lin, fan_in in (("query", h), ("key", kv), ("value", kv)):
        s |= {f"{b}{att}.self.{lin}.weight": (h, fan_in), f"{b}{att}.self.{lin}.bias": (h,)}
      s |= {f"{b}{att}.output.dense.weight": (h, h), f"{b}{att}.output.dense.bias": (h,)}
      s |= {f"{b}{att}.output.LayerNorm.weight": (h,), f"{b}{att}.output.LayerNorm.bias": (h,)}
    s |= {b + "intermediate_query.dense.weight": (m, h), b + "intermediate_query.dense.bias": (m,)}
    s |= {b + "output_query.dense.weight": (h, m), b + "output_query.dense.bias": (h,)}
    s |= {b + "output_query.LayerNorm.weight": (h,), b + "output_query.LayerNorm.bias": (h,)}
  for i in range(c["decoder_depth"]):
    b, m = f"blocks_image.{i}.", c["decoder_mlp"]
    s |= {b + "norm1.weight": (h,), b + "norm1.bias": (h,), b + "norm2.weight": (h,)}
    s |= {b + "norm2.bias": (h,), b + "attn.qkv.weight": (3 * h, h), b + "attn.qkv.bias": (3 * h,)}
    s |= {b + "attn.proj.weight": (h, h), b + "attn.proj.bias": (h,)}
    s |= {b + "mlp.fc1.weight": (m, h), b + "mlp.fc1.bias": (m,), b + "mlp.fc2.weight": (h, m)}
    s |= {b + "mlp.fc2.bias": (h,)}
  widths = [h, *c["image_down"]]
  for i in range(len(c["image_down"])):
    s[f"image_down.{2 * i}.weight"] = (widths[i + 1], widths[i])
  return s


def seed_checkpoint(c: dict, seed: int = 0) -> dict:
  """Random tensors in SEED's layout, plus the training-only keys real checkpoints carry."""
  g = torch.Generator().manual_seed(seed)
  state = {}
  for k, shape in seed_layout(c).items():
    x = torch.randn(shape, generator=g)
    if len(shape) == 1:  # biases, norms: near PyTorch's init so activations stay varied
      is_norm = "norm" in k.lower() or k.startswith("ln_")
      x = 0.1 * x + (1.0 if is_norm and k.endswith("weight") else 0.0)
    elif k.endswith("weight") and "embedding" not in k:
      x = x / np.sqrt(np.prod(shape[1:]))
    state[k] = x
  h = c["qformer_width"]
  state["Qformer.bert.embeddings.position_ids"] = torch.arange(16)[None]
  state["pos_embed"] = torch.zeros(1, c["num_queries"], h)  # recon_s branch
  state["blocks.0.norm1.weight"] = torch.ones(h)
  state["Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(4 * h, h)
  return state


# ---- a tiny unCLIP pipeline ---------------------------------------------------------------------
def tiny_unclip(directory, embed_dim: int = 16) -> str:
  """A random StableUnCLIPImg2ImgPipeline saved with diffusers' save_pretrained (safetensors)."""
  import diffusers
  import transformers
  from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
    StableUnCLIPImageNormalizer,
  )

  torch.manual_seed(0)
  directory.mkdir(parents=True, exist_ok=True)
  words = ["a", "b", "c", "photo", "of"]
  vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
  vocab |= {w + "</w>": i + 2 for i, w in enumerate(words)}
  (directory / "vocab.json").write_text(json.dumps(vocab))
  (directory / "merges.txt").write_text("#version: 0.2\n")
  tokenizer = transformers.CLIPTokenizer(
    str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=8
  )
  text = transformers.CLIPTextModel(
    transformers.CLIPTextConfig(
      vocab_size=len(vocab),
      hidden_size=16,
      intermediate_size=32,
      num_hidden_layers=1,
      num_attention_heads=2,
      max_position_embeddings=8,
      projection_dim=16,
    )
  )
  image_encoder = transformers.CLIPVisionModelWithProjection(
    transformers.CLIPVisionConfig(
      hidden_size=16,
      intermediate_size=32,
      num_hidden_layers=1,
      num_attention_heads=2,
      image_size=16,
      patch_size=8,
      projection_dim=embed_dim,
    )
  )
  unet = diffusers.UNet2DConditionModel(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    attention_head_dim=2,
    cross_attention_dim=16,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    class_embed_type="projection",
    projection_class_embeddings_input_dim=2 * embed_dim,
  )
  vae = diffusers.AutoencoderKL(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 8),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=4,
    sample_size=16,
  )
  pipe = diffusers.StableUnCLIPImg2ImgPipeline(
    feature_extractor=transformers.CLIPImageProcessor(size=16, crop_size=16),
    image_encoder=image_encoder,
    image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
    image_noising_scheduler=diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
    tokenizer=tokenizer,
    text_encoder=text,
    unet=unet,
    scheduler=diffusers.DDIMScheduler(prediction_type="v_prediction"),
    vae=vae,
  )
  out = directory / "unclip"
  pipe.save_pretrained(str(out), safe_serialization=True)
  return str(out)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(tokenizer dir, SEED-named source state) from the conversion command, with a tiny unCLIP."""
  from data_pipelines import convert_weights

  root = tmp_path_factory.mktemp("seed")
  source = seed_checkpoint(TINY)
  torch.save(source, root / "seed_quantizer.pt")  # test setup only: the release's format
  (root / "config.json").write_text(json.dumps(TINY))
  unclip = tiny_unclip(root / "pipe", TINY["image_embed_dim"])
  out = str(root / "image")
  convert_weights.main(
    [
      "--kind=seed",
      f"--src={root / 'seed_quantizer.pt'}",
      f"--unclip={unclip}",
      f"--config={root / 'config.json'}",
      f"--out={out}",
    ]
  )
  return out, source


@pytest.fixture(scope="module")
def tok(converted):
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer

  # float32: the reference forward in test_seed_tokenizer_reference.py checks exact arithmetic;
  # the float16 default (MIO's) is tested in test_mio_preprocessing.py.
  t = SEEDImageTokenizer.load(converted[0], device="cpu", dtype="float32")
  t.decode_settings["num_inference_steps"] = 2
  return t


def image(seed: int, size: int = 28) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_decode_through_unclip_is_seeded(tok):
  codes = tok.encode(image(3))
  out = tok.decode(codes)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8  # the tiny pipeline's resolution
  np.testing.assert_array_equal(tok.decode(codes), out)
  other = tok.decode((codes + 1) % 16)
  assert not np.array_equal(other, out)
  with pytest.raises(ValueError, match=r"\[0, 16\)"):
    tok.decode(np.full(8, 16))
  with pytest.raises(ValueError, match="expected 8 codes"):
    tok.decode(codes[:4])


def test_save_load_round_trip_and_load_part(tok, tmp_path):
  from mio_jax.tokens.tokenizers import load_part

  tok.save(str(tmp_path / "image"))
  names = sorted(p.name for p in (tmp_path / "image").iterdir())
  assert names == ["config.json", "model.safetensors", "tokenizer.json", "unclip"]
  assert not list((tmp_path / "image").rglob("*.bin")) and not list((tmp_path).rglob("*.pt"))
  meta = json.loads((tmp_path / "image" / "tokenizer.json").read_text())
  assert meta["kind"] == "seed" and meta["decode"]["num_inference_steps"] == 2
  assert meta["dtype"] == "float32"
  loaded = load_part("image", str(tmp_path / "image"))
  assert type(loaded).__name__ == "SEEDImageTokenizer"
  for s in range(3):
    np.testing.assert_array_equal(loaded.encode(image(s)), tok.encode(image(s)))
  codes = tok.encode(image(4))
  if loaded.device == "cpu":  # load picks CUDA when torch has it; tok runs on CPU
    np.testing.assert_array_equal(loaded.decode(codes), tok.decode(codes))


def test_encode_only_directory(tmp_path):
  from data_pipelines.tokenizers.seed_tokenizer import SEEDImageTokenizer

  t = SEEDImageTokenizer.from_config(TINY, device="cpu")
  t.save(str(tmp_path))
  loaded = SEEDImageTokenizer.load(str(tmp_path), device="cpu")
  assert loaded.encode(image(0)).shape == (8,)
  with pytest.raises(ValueError, match="no unCLIP pipeline"):
    loaded.decode(np.zeros(8, dtype=np.int32))
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(ValueError, match="lacks model.safetensors"):
    SEEDImageTokenizer.load(str(tmp_path))
