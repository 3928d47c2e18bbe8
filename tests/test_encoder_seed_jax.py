"""SEED-Tokenizer's encoder in JAX (mio_jax/encoders/seed.py) against the torch adapter
(data_pipelines/tokenizers/seed_tokenizer.py, float32) on the tiny real checkpoint that
tests/test_seed_tokenizer.py builds and converts: the same codes for images of every format,
every stage's features close, batching exact, bf16 measured, bad weights named."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

from mio_jax.encoders.seed import (
  SEEDWeightsError,
  encode_pixels,
  encode_stages,
  load_seed_encoder,
)
from mio_jax.errors import UserError
from mio_jax.io import paths
from mio_jax.io.media import read_image
from tests import test_seed_tokenizer as seed

# Its module-scoped fixtures, bound here so that pytest finds them (built once for this module).
converted, tok = seed.converted, seed.tok


def _noise(rng, h, w, c):
  """Smooth structure plus noise, so that JPEG keeps some of it and codes vary."""
  yy, xx = np.mgrid[0:h, 0:w]
  base = 127 + 100 * np.sin(xx[..., None] * rng.uniform(0.1, 0.8, c) + yy[..., None] * 0.3)
  return np.clip(base + rng.normal(0, 40, (h, w, c)), 0, 255).astype(np.uint8)


def write_images(directory) -> list[str]:
  """12 image files in the formats and modes read_image meets: JPEG, PNG RGB / RGBA / palette /
  grey / grey+alpha / 16-bit, BMP, GIF; square, non-square, odd, tiny and large sizes."""
  rng = np.random.default_rng(7)
  made = []

  def save(name, im, **kw):
    path = str(directory / name)
    im.save(path, **kw)
    made.append(path)

  save("rgb.jpg", Image.fromarray(_noise(rng, 28, 28, 3)), quality=90)
  save("wide.jpg", Image.fromarray(_noise(rng, 20, 64, 3)), quality=75)
  save("grey.jpg", Image.fromarray(_noise(rng, 33, 50, 1)[..., 0], "L"))
  save("rgb.png", Image.fromarray(_noise(rng, 28, 28, 3)))
  save("large.png", Image.fromarray(_noise(rng, 224, 224, 3)))
  save("rgba.png", Image.fromarray(_noise(rng, 17, 31, 4), "RGBA"))
  save("palette.png", Image.fromarray(_noise(rng, 40, 40, 3)).quantize(colors=32))
  save("grey.png", Image.fromarray(_noise(rng, 45, 23, 1)[..., 0], "L"))
  save("grey_alpha.png", Image.fromarray(_noise(rng, 29, 29, 2), "LA"))
  grey16 = (_noise(rng, 30, 26, 1)[..., 0].astype(np.uint16) * 257) ^ rng.integers(0, 256, (30, 26))
  save("grey16.png", Image.fromarray(grey16.astype(np.uint16)))  # mode I;16
  save("tiny.bmp", Image.fromarray(_noise(rng, 3, 5, 3)))
  save("odd.gif", Image.fromarray(_noise(rng, 37, 19, 3)).convert("P"))
  return made


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  directory = tmp_path_factory.mktemp("seed_images")
  files = write_images(directory)
  out = [read_image(f) for f in files]
  assert len(out) == 12 and all(im.dtype == np.uint8 and im.shape[2] == 3 for im in out)
  return out


@pytest.fixture(scope="module")
def encoder(converted):
  return load_seed_encoder(converted[0])


def pixels_of(tok, imgs) -> np.ndarray:
  """The adapter's preprocessing (MIO's), stacked: float32 [N, 3, S, S]."""
  assert tok.dtype == "float32"
  return np.concatenate([tok.pixels(im).numpy() for im in imgs])


def relative_error(got, want) -> float:
  """max |got - want| over max |want|: relative to the tensor's scale, not elementwise."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())


def test_codes_match_the_torch_adapter_on_real_image_files(encoder, tok, images):
  params, config = encoder
  assert config.num_queries == tok.tokens_per_image and config.codebook_size == tok.codebook_size
  torch_codes = np.stack([tok.encode(im) for im in images])
  jax_codes = np.asarray(encode_pixels(params, config, pixels_of(tok, images)))
  assert jax_codes.dtype == np.int32 and jax_codes.shape == torch_codes.shape == (12, 8)
  agree = float((jax_codes == torch_codes).mean())
  print(f"SEED JAX f32 vs torch f32 adapter: {agree:.4%} of {torch_codes.size} codes equal")
  assert agree >= 0.999, (jax_codes, torch_codes)
  assert len({tuple(c) for c in torch_codes}) > 6  # the images give different codes


def test_each_stage_matches_the_torch_module(encoder, tok, images):
  """ln_vision tokens, Q-Former outputs and pre-VQ features, so that a failure says where."""
  params, config = encoder
  px = pixels_of(tok, images)
  stages = encode_stages(params, config, px)
  with torch.no_grad():
    model, px_t = tok.model, torch.from_numpy(px)
    vision = model.vision(pixel_values=px_t).last_hidden_state
    queries = model.query_features(px_t)
    z = model.encode_task_layer(queries)
    codes = model.quantize(z)
  for name, want in (("vision", vision), ("queries", queries), ("z", z)):
    err = relative_error(stages[name], want.numpy())
    assert err < 1e-4, f"stage {name}: relative error {err:.2e}"
  np.testing.assert_array_equal(np.asarray(stages["codes"]), codes.numpy())


def test_batch_of_four_equals_one_at_a_time(encoder, tok, images):
  params, config = encoder
  px = pixels_of(tok, images[:4])
  batched = encode_stages(params, config, px)
  for i in range(4):
    single = encode_stages(params, config, px[i : i + 1])
    np.testing.assert_array_equal(np.asarray(batched["codes"][i]), np.asarray(single["codes"][0]))
    np.testing.assert_allclose(batched["z"][i], single["z"][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(
    np.asarray(jax.jit(encode_pixels, static_argnums=(1,))(params, config, px)),
    np.asarray(batched["codes"]),
  )


def test_bfloat16_agreement_is_measured(encoder, tok, images):
  """bf16 matmuls (f32 statistics, f32 distances) against the f32 adapter. On this tiny random
  model (16 codes in 4 dimensions, many queries near a boundary) bf16 moves some queries across;
  the floor only says the bf16 path computes the same function, not a different one (chance
  agreement over 16 codes is about 1/16)."""
  params, config = encoder
  px = pixels_of(tok, images)
  torch_codes = np.stack([tok.encode(im) for im in images])
  bf16 = encode_stages(params, config, px, jnp.bfloat16)
  agree = float((np.asarray(bf16["codes"]) == torch_codes).mean())
  f32_z = np.asarray(encode_stages(params, config, px)["z"])
  print(
    f"SEED JAX bf16 vs torch f32 adapter: {agree:.2%} of {torch_codes.size} codes equal; "
    f"pre-VQ relative error {relative_error(bf16['z'], f32_z):.2e}"
  )
  assert agree > 0.5


def _copy(converted, tmp_path):
  out = tmp_path / "seed"
  out.mkdir()
  for name in ("tokenizer.json", "config.json", "model.safetensors"):
    shutil.copy(f"{converted[0]}/{name}", out / name)
  return out


def test_missing_or_misshapen_tensor_is_named(converted, tmp_path):
  directory = _copy(converted, tmp_path)
  weights = directory / "model.safetensors"
  tensors = load_file(str(weights))
  missing = "qformer.encoder.layer.1.output_query.dense.weight"
  save_file({k: v for k, v in tensors.items() if k != missing}, str(weights))
  with pytest.raises(SEEDWeightsError, match=rf"model\.safetensors.*missing tensor '{missing}'"):
    load_seed_encoder(str(directory))
  misshapen = dict(tensors, **{"codebook.weight": np.zeros((16, 5), np.float32)})
  save_file(misshapen, str(weights))
  with pytest.raises(
    SEEDWeightsError, match=r"'codebook\.weight' has shape \(16, 5\), expected \(16, 4\)"
  ):
    load_seed_encoder(str(directory))
  assert issubclass(SEEDWeightsError, UserError)


def test_bad_directory_and_pixels_are_named(converted, encoder, tmp_path):
  directory = _copy(converted, tmp_path)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps(config | {"vision_widht": 8}))
  with pytest.raises(UserError, match=r"config\.json: unknown SEED config keys \['vision_widht'\]"):
    load_seed_encoder(str(directory))
  (directory / "config.json").unlink()
  with pytest.raises(UserError, match="lacks config.json"):
    load_seed_encoder(str(directory))
  params, config = encoder
  with pytest.raises(UserError, match=r"expected \[N, 3, 28, 28\] \(NxCxHxW"):
    encode_pixels(params, config, np.zeros((1, 28, 28, 3), np.float32))


def test_loads_from_gcs(gcs, converted, encoder, tmp_path):
  url = f"gs://{gcs.new_bucket()}/seed"
  paths.copy_tree(str(_copy(converted, tmp_path)), url)
  params, config = load_seed_encoder(url)
  assert config == encoder[1]
  jax.tree.map(np.testing.assert_array_equal, params, encoder[0])
