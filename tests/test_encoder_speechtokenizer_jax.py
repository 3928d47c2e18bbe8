"""mio_jax.encoders.speechtokenizer (JAX) against the torch SpeechTokenizer adapter (the
`speechtokenizer` package): the same saved directory, real audio files, the same codes."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
import torch  # test extras: installed by `launch/setup.sh --test`

from data_pipelines.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter, _model_class
from mio_jax.encoders import speechtokenizer as st
from mio_jax.io import paths
from mio_jax.io.media import read_audio, resample

pytestmark = [
  pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning"),
  pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning"),
]

# Tiny, but every branch of the released network: two residual layers per stage (dilations 1
# and 2), a two-layer BiLSTM (the second layer reads 2C channels), the released strides.
TINY_CONFIG = {
  "n_filters": 8,
  "dimension": 32,
  "strides": [8, 5, 4, 2],
  "lstm_layers": 2,
  "bidirectional": True,
  "dilation_base": 2,
  "residual_kernel_size": 3,
  "n_residual_layers": 2,
  "activation": "ELU",
  "sample_rate": 16000,
  "n_q": 6,
  "codebook_size": 64,
  "semantic_dimension": 16,
}
SECONDS = 3  # every file resamples to exactly 48,000 samples: one compile for them all
# (name, sample rate, channels, libsndfile subtype)
AUDIO_FILES = (
  ("mono16k.wav", 16_000, 1, "PCM_16"),
  ("mono8k.wav", 8_000, 1, "PCM_16"),
  ("mono22k.flac", 22_050, 1, "PCM_16"),
  ("stereo44k.wav", 44_100, 2, "PCM_24"),
  ("mono48k.flac", 48_000, 1, "PCM_24"),
)


def noise_and_tones(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
  """White noise plus a few gliding tones under slow amplitude envelopes, so the codes spread
  over the codebooks. float32 [n, channels]."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  wave = 0.03 * rng.standard_normal((len(t), channels))
  for _ in range(3):
    f0, f1 = rng.uniform(100, min(3_500, rate / 2.5), 2)
    phase = 2 * np.pi * np.cumsum(np.linspace(f0, f1, len(t))) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 5) * t + rng.uniform(0, 6))
    wave += (0.15 * envelope * np.sin(phase))[:, None] * rng.uniform(0.5, 1.0, channels)
  return wave.astype(np.float32)


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
  """A tiny SpeechTokenizer saved by the adapter, its codebooks k-means-initialised on encoder
  residuals by the package's own training path (EuclideanCodebook.init_embed_): codebook rows sit
  among real encoder outputs, so nearest-row choices are as close-run as a trained model's.

  Every conv's weight-norm gain is scaled by sqrt(3): torch's default init (kaiming_uniform with
  a=sqrt(5), variance 1 / (3 fan_in)) shrinks the signal ~sqrt(3)-fold per conv, so after 20 convs
  the features are the biases' constant plus variations of 1e-3 of it, and nearest-row choices
  drown in f32 rounding (torch itself then disagrees with float64 on a quarter of the codes).
  Variance-preserving gains give features that vary as a trained encoder's do."""
  tok = SpeechTokenizerAdapter.from_config(TINY_CONFIG, num_layers=4)
  calibration = np.concatenate(
    [noise_and_tones(4, 16_000, 1, seed)[:, 0] for seed in (100, 101, 102)]
  )
  with torch.no_grad():
    for name, gain in tok.model.encoder.named_parameters():
      if name.endswith("weight_g"):
        gain.mul_(3**0.5)
    features = tok.model.encoder(torch.from_numpy(calibration)[None, None])
    tok.model.quantizer.train()
    tok.model.quantizer(features)  # first training call: k-means init of every layer in turn
    tok.model.quantizer.eval()
  directory = str(tmp_path_factory.mktemp("speech"))
  tok.save(directory)
  return directory


@pytest.fixture(scope="module")
def package_modules():
  """The package's modules, imported as the adapter does (its __init__ wants torchaudio & co)."""
  _model_class()
  from speechtokenizer.modules.conv import SConv1d
  from speechtokenizer.modules.lstm import SLSTM

  return SConv1d, SLSTM


@pytest.fixture(scope="module")
def torch_tok(speech_dir):
  return SpeechTokenizerAdapter.load(speech_dir)


@pytest.fixture(scope="module")
def jax_encoder(speech_dir):
  return st.load_speech_encoder(speech_dir, num_layers=4)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
  """(path, file rate) of real audio files in several formats, rates and channel counts."""
  root = tmp_path_factory.mktemp("audio")
  files = []
  for i, (name, rate, channels, subtype) in enumerate(AUDIO_FILES):
    path = str(root / name)
    soundfile.write(path, noise_and_tones(SECONDS, rate, channels, seed=i), rate, subtype=subtype)
    files.append((path, rate))
  return files


def waves_16k(audio_files) -> list[np.ndarray]:
  """Each file read back and resampled to 16 kHz as the adapter does before its model."""
  out = []
  for path, rate in audio_files:
    wave, file_rate = read_audio(path)
    assert file_rate == rate
    out.append(resample(wave, file_rate, 16_000, "sinc_hann"))
  return out


def test_codes_match_torch_adapter_on_audio_files(torch_tok, jax_encoder, audio_files):
  params, config = jax_encoder
  equal = total = 0
  codes_used = []
  for (path, rate), wave in zip(audio_files, waves_16k(audio_files)):
    file_wave, _ = read_audio(path)
    torch_LxT = torch_tok.encode(file_wave, rate)  # the adapter resamples itself
    jax_LxT = np.asarray(st.encode_wave(params, config, jnp.asarray(wave)[None]))[0]
    assert jax_LxT.dtype == np.int32 and jax_LxT.shape == torch_LxT.shape == (4, 50 * SECONDS)
    codes_used.append(torch_LxT)
    equal += int((jax_LxT == torch_LxT).sum())
    total += jax_LxT.size
  fraction = equal / total
  distinct = [len(np.unique(layer)) for layer in np.concatenate(codes_used, axis=1)]
  print(f"JAX f32 vs torch: {fraction:.5f} of {total} codes equal; distinct codes {distinct}")
  assert min(distinct) >= 8, f"codes too uniform to test: {distinct} of 64 per quantizer"
  assert fraction >= 0.999


def test_continuous_features_match_torch_encoder(torch_tok, jax_encoder, audio_files):
  """The encoder output before VQ: a code mismatch with matching features is the VQ's fault."""
  params, config = jax_encoder
  for wave in waves_16k(audio_files)[:2] + [np.asarray(waves_16k(audio_files)[2][:16_003])]:
    with torch.no_grad():
      torch_BxDxT = torch_tok.model.encoder(torch.from_numpy(wave)[None, None]).numpy()
    jax_BxTxD = np.asarray(st.encode_features(params, config, jnp.asarray(wave)[None]))
    assert jax_BxTxD.shape == (1, config.num_frames(len(wave)), config.dimension)
    scale = np.abs(torch_BxDxT).max()
    np.testing.assert_allclose(jax_BxTxD, torch_BxDxT.transpose(0, 2, 1), atol=1e-4 * scale)


def test_batch_equals_single_waves(jax_encoder, audio_files):
  params, config = jax_encoder
  waves = waves_16k(audio_files)
  batch_BxLxT = np.asarray(st.encode_wave(params, config, jnp.asarray(np.stack(waves))))
  assert batch_BxLxT.shape == (len(waves), 4, 50 * SECONDS)
  for b, wave in enumerate(waves):
    single_LxT = np.asarray(st.encode_wave(params, config, jnp.asarray(wave)[None]))[0]
    np.testing.assert_array_equal(batch_BxLxT[b], single_LxT)


def test_bf16_agreement(torch_tok, jax_encoder, audio_files):
  params, config = jax_encoder
  waves = waves_16k(audio_files)
  bf16_BxLxT = np.asarray(
    st.encode_wave(params, config, jnp.asarray(np.stack(waves)), compute_dtype=jnp.bfloat16)
  )
  torch_BxLxT = np.stack([torch_tok.encode(w, 16_000) for w in waves])
  per_layer = (bf16_BxLxT == torch_BxLxT).mean(axis=(0, 2))
  print(f"JAX bf16 vs torch f32: {per_layer.mean():.4f} equal; per quantizer {per_layer.round(4)}")
  # Loose floor: bf16 convs move features by ~1e-2 relative, which flips close-run choices and
  # (residually) the later quantizers; far above chance (1/64) all the same.
  assert per_layer[0] >= 0.8 and per_layer.mean() >= 0.7


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize(
  "kernel,stride,dilation,length", [(7, 1, 1, 50), (3, 1, 2, 3), (16, 8, 1, 45), (10, 5, 1, 4)]
)
def test_sconv1d_padding_matches_package(
  package_modules, causal, pad_mode, kernel, stride, dilation, length
):
  """Each padding branch of SConv1d, short inputs (pad1d's zero pre-padding) included."""
  SConv1d, _ = package_modules
  torch.manual_seed(kernel + length)
  conv = SConv1d(
    3, 5, kernel, stride, dilation, causal=causal, norm="weight_norm", pad_mode=pad_mode
  ).eval()
  state = st.StateDict({k: v.numpy() for k, v in conv.state_dict().items()}, "SConv1d")
  params = jax.tree_util.tree_map(jnp.asarray, state.conv("conv.conv", 5, 3, kernel))
  x_BxCxT = torch.randn(2, 3, length)
  with torch.no_grad():
    expected_BxOxT = conv(x_BxCxT).numpy()
  config = st.config_from_json(TINY_CONFIG, 4)
  config = dataclasses.replace(config, causal=causal, pad_mode=pad_mode)
  got_BxTxO = st.sconv1d(
    jnp.asarray(x_BxCxT.numpy().transpose(0, 2, 1)), params, config, stride, dilation
  )
  np.testing.assert_allclose(np.asarray(got_BxTxO), expected_BxOxT.transpose(0, 2, 1), atol=2e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_slstm_matches_package(package_modules, bidirectional):
  """The (Bi)LSTM with its skip, against the package's SLSTM (torch nn.LSTM)."""
  _, SLSTM = package_modules
  torch.manual_seed(1)
  module = SLSTM(12, num_layers=2, bidirectional=bidirectional).eval()
  state = st.StateDict({k: v.numpy() for k, v in module.state_dict().items()}, "SLSTM")
  directions = 2 if bidirectional else 1
  layers = [
    state.lstm_layer("lstm", layer, directions, 12 if layer == 0 else 12 * directions, 12)
    for layer in range(2)
  ]
  x_BxCxT = torch.randn(3, 12, 17)
  with torch.no_grad():
    expected_BxCxT = module(x_BxCxT).numpy()
  got_BxTxC = st.slstm(jnp.asarray(x_BxCxT.numpy().transpose(0, 2, 1)), layers)
  np.testing.assert_allclose(np.asarray(got_BxTxC), expected_BxCxT.transpose(0, 2, 1), atol=1e-5)


def rewrite_weights(src: str, dst: str, edit) -> None:
  from safetensors.numpy import load_file, save_file

  shutil.copytree(src, dst)
  tensors = load_file(f"{dst}/model.safetensors")
  edit(tensors)
  save_file(tensors, f"{dst}/model.safetensors")


def test_missing_or_misshaped_tensor_is_named(speech_dir, tmp_path):
  name = "encoder.model.17.lstm.weight_hh_l1_reverse"
  missing = str(tmp_path / "missing")
  rewrite_weights(speech_dir, missing, lambda t: t.pop(name))
  with pytest.raises(st.SpeechEncoderLoadError, match=f"model.safetensors: tensor {name} missing"):
    st.load_speech_encoder(missing)

  conv = "encoder.model.0.conv.conv.weight_v"
  bad = str(tmp_path / "misshaped")
  rewrite_weights(speech_dir, bad, lambda t: t.update({conv: t[conv][:, :, :5].copy()}))
  with pytest.raises(
    st.SpeechEncoderLoadError, match=rf"tensor {conv} has shape \(8, 1, 5\), expected \(8, 1, 7\)"
  ):
    st.load_speech_encoder(bad)

  codebook = str(tmp_path / "codebook")
  rewrite_weights(speech_dir, codebook, lambda t: t.pop("quantizer.vq.layers.3._codebook.embed"))
  st.load_speech_encoder(codebook, num_layers=3)  # only the first num_layers are read
  with pytest.raises(st.SpeechEncoderLoadError, match="layers.3._codebook.embed missing"):
    st.load_speech_encoder(codebook, num_layers=4)

  with pytest.raises(st.SpeechEncoderLoadError, match=r"num_layers 7 outside \[1, 6\]"):
    st.load_speech_encoder(speech_dir, num_layers=7)
  config_only = tmp_path / "config_only"
  config_only.mkdir()
  shutil.copy(f"{speech_dir}/config.json", config_only)
  with pytest.raises(st.SpeechEncoderLoadError, match="config_only lacks model.safetensors"):
    st.load_speech_encoder(str(config_only))
  (config_only / "config.json").write_text('{"n_filters": 8}')
  shutil.copy(f"{speech_dir}/model.safetensors", config_only)
  with pytest.raises(st.SpeechEncoderLoadError, match=r"config.json: missing .*'dimension'"):
    st.load_speech_encoder(str(config_only))


def test_loads_from_gcs(gcs, speech_dir, jax_encoder):
  url = f"gs://{gcs.new_bucket()}/speech"
  paths.copy_tree(speech_dir, url)
  params, config = st.load_speech_encoder(url)
  assert config == jax_encoder[1]
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, jax_encoder[0])
