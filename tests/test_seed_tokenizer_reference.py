"""SEED-Tokenizer's encoder against a reference forward written from SEED's architecture (EVA
blocks, causal BERT Q-Former, VQ head, decoder) on the pickled tensors of the tiny checkpoint
tests/test_seed_tokenizer.py builds and converts."""

import numpy as np
import torch

from tests import test_seed_tokenizer as seed
from tests.test_seed_tokenizer import TINY, image

F = torch.nn.functional

# Its module-scoped fixtures, bound here so that pytest finds them (built once for this module).
converted, tok = seed.converted, seed.tok


# ---- a reference forward on SEED-named tensors ---------------------------------------------------
def _ln(x, sd, p, eps):
  return F.layer_norm(x, x.shape[-1:], sd[p + "weight"], sd[p + "bias"], eps)


def _attend(q, k, v, heads, mask=None):
  b, n, d = q.shape
  split = lambda t: t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
  w = split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5
  w = (w if mask is None else w + mask).softmax(-1)
  return (w @ split(v)).transpose(1, 2).reshape(b, n, d)


def reference_queries(sd, c, pixels, query_tokens=None):
  """EVA ViT (q/v bias, no final norm) -> ln_vision -> Q-Former with causal query self-attention."""
  lin = lambda x, p, bias=True: F.linear(x, sd[p + "weight"], sd[p + "bias"] if bias else None)  # noqa: E731
  x = F.conv2d(
    pixels,
    sd["visual_encoder.patch_embed.proj.weight"],
    sd["visual_encoder.patch_embed.proj.bias"],
    stride=c["patch_size"],
  )
  x = torch.cat([sd["visual_encoder.cls_token"], x.flatten(2).transpose(1, 2)], 1)
  x = x + sd["visual_encoder.pos_embed"]
  for i in range(c["vision_layers"]):
    p = f"visual_encoder.blocks.{i}."
    qb, vb = sd[p + "attn.q_bias"], sd[p + "attn.v_bias"]
    qkv = F.linear(
      _ln(x, sd, p + "norm1.", 1e-6),
      sd[p + "attn.qkv.weight"],
      torch.cat([qb, torch.zeros_like(qb), vb]),
    )
    x = x + lin(_attend(*qkv.chunk(3, -1), c["vision_heads"]), p + "attn.proj.")
    h = _ln(x, sd, p + "norm2.", 1e-6)
    x = x + lin(F.gelu(lin(h, p + "mlp.fc1.")), p + "mlp.fc2.")
  image = _ln(x, sd, "ln_vision.", 1e-5)
  q = sd["query_tokens"] if query_tokens is None else query_tokens
  q = _ln(q, sd, "Qformer.bert.embeddings.LayerNorm.", 1e-12)
  n = q.shape[1]
  causal = torch.full((n, n), -10000.0).triu(1)  # SEED's additive mask
  for i in range(c["qformer_layers"]):
    p = f"Qformer.bert.encoder.layer.{i}."
    for att, ctx, mask in [("attention", None, causal), ("crossattention", image, None)]:
      if att == "crossattention" and i % 2:
        continue
      ctx, s = (q if ctx is None else ctx), f"{p}{att}."
      out = _attend(
        lin(q, s + "self.query."),
        lin(ctx, s + "self.key."),
        lin(ctx, s + "self.value."),
        c["qformer_heads"],
        mask,
      )
      q = _ln(lin(out, s + "output.dense.") + q, sd, s + "output.LayerNorm.", 1e-12)
    h = F.gelu(lin(q, p + "intermediate_query.dense."))
    q = _ln(lin(h, p + "output_query.dense.") + q, sd, p + "output_query.LayerNorm.", 1e-12)
  return q


def reference_embeds(sd, c, codes):
  lin = lambda x, p, bias=True: F.linear(x, sd[p + "weight"], sd[p + "bias"] if bias else None)  # noqa: E731
  x = sd["quantize.embedding.weight"][codes]
  x = (
    lin(torch.tanh(lin(x, "decode_task_layer.0.")), "decode_task_layer.2.") + sd["pos_embed_image"]
  )
  for i in range(c["decoder_depth"]):
    p = f"blocks_image.{i}."
    qkv = lin(_ln(x, sd, p + "norm1.", 1e-6), p + "attn.qkv.")
    x = x + lin(_attend(*qkv.chunk(3, -1), c["decoder_heads"]), p + "attn.proj.")
    x = x + lin(F.gelu(lin(_ln(x, sd, p + "norm2.", 1e-6), p + "mlp.fc1.")), p + "mlp.fc2.")
  for i in range(len(c["image_down"])):
    x = F.linear(x, sd[f"image_down.{2 * i}.weight"])
    x = F.relu(x) if i < len(c["image_down"]) - 1 else x
  return lin(x.flatten(1), "distill_image_proj.")


def nearest_codes(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
  """Brute force: index of the closest codebook row (squared L2) for every row of z."""
  return np.array([np.argmin(((codebook - row) ** 2).sum(-1)) for row in z], dtype=np.int32)


def clip_pixels(img: np.ndarray):
  mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
  std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
  x = (img.astype(np.float32) / 255.0 - mean) / std
  return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def test_interface_and_codes_match_a_reference_forward(converted, tok):
  from data_pipelines.tokenizers import ImageTokenizer

  _, source = converted
  assert isinstance(tok, ImageTokenizer)
  assert (tok.codebook_size, tok.tokens_per_image, tok.image_size) == (16, 8, 28)
  img = image(0)
  with torch.no_grad():
    queries = reference_queries(source, TINY, clip_pixels(img))
    np.testing.assert_allclose(
      tok.model.query_features(tok.pixels(img)).numpy(), queries.numpy(), atol=1e-4
    )
    sd = {k: v.numpy().astype(np.float64) for k, v in source.items()}
    h = np.tanh(
      queries[0].numpy() @ sd["encode_task_layer.0.weight"].T + sd["encode_task_layer.0.bias"]
    )
    z = h @ sd["encode_task_layer.2.weight"].T + sd["encode_task_layer.2.bias"]
  codes = tok.encode(img)
  assert codes.shape == (8,) and codes.dtype == np.int32
  np.testing.assert_array_equal(codes, nearest_codes(z, sd["quantize.embedding.weight"]))
  assert codes.min() >= 0 and codes.max() < 16
  np.testing.assert_array_equal(tok.encode(img), codes)  # deterministic
  assert len({tuple(tok.encode(image(s))) for s in range(6)}) > 1  # depends on the image
  assert tok.encode(image(1, size=50)).shape == (8,)  # any size is squashed to 28
  with torch.no_grad():
    np.testing.assert_allclose(
      tok.image_embeds(codes).numpy(),
      reference_embeds(source, TINY, torch.from_numpy(codes.astype(np.int64))[None]).numpy(),
      atol=1e-4,
    )


def test_queries_attend_causally(tok):
  pixels = tok.pixels(image(2))
  base = tok.model.query_tokens.detach().clone()
  with torch.no_grad():
    ref = tok.model.query_features(pixels, base)
    for j in (0, 3, 7):
      moved = base.clone()
      moved[0, j] += torch.randn(moved.shape[-1], generator=torch.Generator().manual_seed(j))
      out = tok.model.query_features(pixels, moved)
      np.testing.assert_allclose(out[0, :j].numpy(), ref[0, :j].numpy(), atol=1e-6)
      assert (out[0, j] - ref[0, j]).abs().max() > 1e-3
      if j < 7:
        assert (out[0, j + 1 :] - ref[0, j + 1 :]).abs().max() > 1e-4  # later ones do see it
