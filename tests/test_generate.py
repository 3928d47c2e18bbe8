"""KV-cache decoding matches full forwards; batching, sampling filters, CFG and beam search
behave."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.generate import constraints as cons
from mio_jax.generate import decode as dec
from mio_jax.generate import sampling as smp
from mio_jax.generate.api import generate, left_pad
from mio_jax.generate.beam import BeamSpec, beam_search
from mio_jax.model.sizes import get_model
from mio_jax.model.transformer import Transformer
from mio_jax.tokens.vocab import IMAGE

N_NEW = 10


@pytest.fixture(scope="module")
def tiny():
  # Large init: confident, input-dependent predictions, so wrong positions/masks change the argmax.
  cfg, vocab = get_model("tiny", n_layers=2, init_std=0.3)
  params = Transformer(cfg).init(jax.random.PRNGKey(0), np.ones((1, 4), np.int32))["params"]
  return cfg, vocab, jax.tree.map(np.asarray, nn.meta.unbox(params))


def prompts_of(vocab):
  return [
    np.asarray([5, 17, 300, 42, 7]),
    np.asarray([vocab.special_id("<|im_start|>"), 99]),
    np.asarray([640, 3, 18]),
  ]


def text_allowed(vocab):
  """Text mode's allowed ids, written out independently of constraints.py."""
  ok = np.zeros(vocab.padded_size, bool)
  ok[: vocab.text_size] = True
  ok[[vocab.special_id("<|im_start|>"), vocab.special_id("<|im_end|>")]] = True
  return ok


def test_kv_cache_greedy_equals_full_forward_argmax(tiny):
  cfg, vocab, params = tiny
  prompts = prompts_of(vocab)
  forward = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))
  ok = text_allowed(vocab)
  outs = generate(
    params,
    cfg,
    vocab,
    prompts,
    max_new_tokens=N_NEW,
    output_modality="text",
    stop_ids=(vocab.special_id("<|im_end|>"),),
    pad_multiple=1,
  )
  for prompt, out in zip(prompts, outs):
    seq = list(prompt)
    expected = []
    for _ in range(N_NEW):
      buf = np.zeros((1, 32), np.int32)
      buf[0, : len(seq)] = seq
      logits = np.asarray(forward(params, jnp.asarray(buf))[0, len(seq) - 1])
      tok = int(np.argmax(np.where(ok, logits, -np.inf)))
      expected.append(tok)
      seq.append(tok)
      if tok == vocab.special_id("<|im_end|>"):
        break
    np.testing.assert_array_equal(out, expected)
  assert len({tuple(o) for o in outs}) == len(outs)  # the prompts really lead to different outputs


def test_batched_left_padded_equals_each_alone(tiny):
  cfg, vocab, params = tiny
  prompts = prompts_of(vocab)
  kw = dict(max_new_tokens=N_NEW, output_modality="auto", image_tokens=4, pad_multiple=1)
  batched = generate(params, cfg, vocab, prompts, **kw)
  for prompt, out in zip(prompts, batched):
    np.testing.assert_array_equal(generate(params, cfg, vocab, [prompt], **kw)[0], out)


def test_left_pad_layout():
  tokens, segments = left_pad([[1, 2, 3], [4]], pad_id=9, multiple=4)
  np.testing.assert_array_equal(tokens, [[9, 1, 2, 3], [9, 9, 9, 4]])
  np.testing.assert_array_equal(segments, [[0, 1, 1, 1], [0, 0, 0, 1]])
  np.testing.assert_array_equal(
    dec.prompt_positions(jnp.asarray(segments)), [[0, 0, 1, 2], [0, 0, 0, 0]]
  )


def _image_decode(cfg, vocab, params, sampling, use_cfg, scale, seed=0):
  c = cons.Constraints(vocab, "image", image_tokens=8)
  spec = dec.DecodeSpec(cfg, c, 10, smp.SamplingFeatures.of(sampling), use_cfg)
  pad = vocab.special_id("<pad>")
  tokens, seg = left_pad(prompts_of(vocab) + [[vocab.special_id("<cfg_null>")]] * 3, pad)
  out, lengths = dec.decode(
    params,
    tokens[:3],
    seg[:3],
    jax.random.PRNGKey(seed),
    smp.make_table(sampling),
    scale,
    tokens[3:] if use_cfg else None,
    seg[3:] if use_cfg else None,
    spec=spec,
  )
  return np.asarray(out), np.asarray(lengths)


def test_cfg_scale_one_equals_no_cfg(tiny):
  cfg, vocab, params = tiny
  sampling = smp.SamplingConfig(temperature=1.0)
  plain = _image_decode(cfg, vocab, params, sampling, False, 1.0)
  np.testing.assert_array_equal(_image_decode(cfg, vocab, params, sampling, True, 1.0)[0], plain[0])
  # ... and guidance really acts: a strong scale changes the sampled image codes.
  assert (_image_decode(cfg, vocab, params, sampling, True, 5.0)[0] != plain[0]).any()
  assert (plain[1] == 10).all()


def test_guided_logits_formula():
  cond, null = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 11))
  logits = jnp.concatenate([cond, null])
  mode = jnp.asarray([cons.IMAGE_MODE, cons.TEXT_MODE, cons.IMAGE_MODE])
  out = np.asarray(dec.guided_logits(logits, mode, 3.0, True))
  np.testing.assert_allclose(out[0], null[0] + 3.0 * (cond[0] - null[0]), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out[1], cond[1])  # text rows are never guided
  np.testing.assert_array_equal(np.asarray(dec.guided_logits(logits, mode, 1.0, True)), cond)


def _choose(logits, config, seed):
  table = smp.make_table(config)
  mode = jnp.zeros(logits.shape[0], jnp.int32)
  allowed = jnp.ones(logits.shape, bool)
  return np.asarray(
    smp.choose_tokens(
      jax.random.PRNGKey(seed), logits, allowed, mode, table, smp.SamplingFeatures.of(config)
    )
  )


def test_top_k_one_and_tiny_top_p_equal_greedy():
  logits = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (64, 300))
  greedy = np.asarray(jnp.argmax(logits, -1))
  for seed in range(5):
    np.testing.assert_array_equal(
      _choose(logits, smp.SamplingConfig(temperature=1.5, top_k=1), seed), greedy
    )
    np.testing.assert_array_equal(
      _choose(logits, smp.SamplingConfig(temperature=1.5, top_p=1e-6), seed), greedy
    )
  # Without filtering, sampling at this temperature does differ from greedy (the test can fail).
  assert (_choose(logits, smp.SamplingConfig(temperature=1.5), 0) != greedy).any()


def test_top_k_and_top_p_keep_the_right_sets():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  k2 = np.asarray(smp.filter_top_k_top_p(logits, jnp.asarray([2]), jnp.asarray([1.0])))
  assert np.isfinite(k2).tolist() == [[True, True, False, False]]
  p = np.asarray(smp.filter_top_k_top_p(logits, jnp.asarray([0]), jnp.asarray([0.7])))
  assert np.isfinite(p).tolist() == [[True, True, False, False]]  # 0.5 < 0.7 ≤ 0.8


def test_top_k_one_end_to_end_equals_greedy(tiny):
  cfg, vocab, params = tiny
  kw = dict(max_new_tokens=N_NEW, output_modality="auto", image_tokens=4, rng=jax.random.PRNGKey(3))
  greedy = generate(params, cfg, vocab, prompts_of(vocab), **kw)
  top1 = generate(params, cfg, vocab, prompts_of(vocab), sampling=smp.SamplingConfig(top_k=1), **kw)
  for a, b in zip(greedy, top1):
    np.testing.assert_array_equal(a, b)


def test_repetition_penalty_lowers_repeated_tokens():
  logits = jnp.asarray([[2.0, -1.0, 0.5, 1.0, -0.3]])
  seen = jnp.asarray([[True, True, False, False, False]])
  before = jax.nn.softmax(logits)[0]
  after = jax.nn.softmax(smp.apply_repetition_penalty(logits, seen, jnp.asarray([1.15])))[0]
  assert after[0] < before[0] and after[1] < before[1]  # positive and negative logits both drop
  assert (after[2:] > before[2:]).all()
  same = smp.apply_repetition_penalty(logits, seen, jnp.asarray([1.0]))
  np.testing.assert_array_equal(same, logits)


def test_repetition_penalty_applies_in_decode_loop(tiny):
  cfg, vocab, params = tiny
  # Greedy with a huge penalty never repeats a token (prompt or generated) while unseen text
  # remains.
  out = generate(
    params,
    cfg,
    vocab,
    prompts_of(vocab),
    max_new_tokens=N_NEW,
    output_modality="text",
    sampling=smp.SamplingConfig(temperature=0.0, repetition_penalty=1e6),
  )
  plain = generate(
    params, cfg, vocab, prompts_of(vocab), max_new_tokens=N_NEW, output_modality="text"
  )
  assert any(len(set(p) | set(o)) < len(p) + len(o) for p, o in zip(prompts_of(vocab), plain))
  for p, o in zip(prompts_of(vocab), out):
    assert len(set(p) | set(o)) == len(p) + len(o), (p, o)


def sequence_logprob(cfg, params, vocab, prompt, seq):
  """Sum of text-mode renormalised log-probs of `seq` after `prompt` (cache-free forwards)."""
  forward = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))
  ok = text_allowed(vocab)
  buf = np.zeros((1, 32), np.int32)
  full = list(prompt) + list(seq)
  buf[0, : len(full)] = full
  logits = np.asarray(forward(params, jnp.asarray(buf))[0], np.float64)
  total = 0.0
  for i, tok in enumerate(seq):
    row = np.where(ok, logits[len(prompt) + i - 1], -np.inf)
    total += row[tok] - np.logaddexp.reduce(row[ok])
  return total


def _beam(cfg, vocab, params, prompts, k, alpha=0.0):
  c = cons.Constraints(vocab, "text")
  spec = BeamSpec(cfg, c, N_NEW, k, alpha)
  tokens, seg = left_pad(prompts, vocab.special_id("<pad>"))
  out, lengths, scores = beam_search(params, tokens, seg, jnp.ones(3), spec=spec)
  return [np.asarray(o)[:n] for o, n in zip(out, lengths)], np.asarray(scores)


def test_beam_one_equals_greedy_and_wider_beams_score_higher(tiny):
  cfg, vocab, params = tiny
  prompts = prompts_of(vocab)
  greedy = generate(params, cfg, vocab, prompts, max_new_tokens=N_NEW, output_modality="text")
  beam1, _ = _beam(cfg, vocab, params, prompts, 1)
  for g, b in zip(greedy, beam1):
    np.testing.assert_array_equal(b, g)
  beam4, scores = _beam(cfg, vocab, params, prompts, 4)
  improved = 0
  for prompt, g, b, s in zip(prompts, greedy, beam4, scores):
    lp_g, lp_b = (sequence_logprob(cfg, params, vocab, prompt, x) for x in (g, b))
    assert lp_b >= lp_g - 1e-4, (lp_b, lp_g)
    np.testing.assert_allclose(
      s, lp_b, rtol=1e-4, atol=1e-4
    )  # reported score = recomputed log-prob
    improved += lp_b > lp_g + 1e-4
  assert improved >= 1  # beam search found something greedy missed


def test_beam_through_api_with_length_penalty(tiny):
  """Finished hypotheses rank by `log p / length ** alpha`: alpha 0 prefers the most probable
  (short) ones, alpha 3 long ones. Every fifth text id stops, so hypotheses end at many lengths."""
  cfg, vocab, params = tiny
  prompts = prompts_of(vocab)
  stops = tuple(range(3, vocab.text_size, 5))
  outs = {
    alpha: generate(
      params,
      cfg,
      vocab,
      prompts,
      max_new_tokens=N_NEW,
      output_modality="text",
      beam_size=4,
      length_penalty=alpha,
      stop_ids=stops,
    )
    for alpha in (0.0, 3.0)
  }
  for o in outs[0.0] + outs[3.0]:
    assert 1 <= len(o) <= N_NEW and (o < vocab.text_size).all()
    assert o[-1] in stops or len(o) == N_NEW  # only a stop id or the budget ends a hypothesis
  changed = 0
  for i, prompt in enumerate(prompts):
    short, long = outs[0.0][i], outs[3.0][i]
    lp = {
      n: sequence_logprob(cfg, params, vocab, prompt, s) for n, s in (("s", short), ("l", long))
    }
    # Each winner beats the other under its own alpha, as the formula says.
    assert lp["s"] >= lp["l"] - 1e-4
    assert lp["l"] / len(long) ** 3.0 >= lp["s"] / len(short) ** 3.0 - 1e-6
    assert len(long) >= len(short)
    changed += not np.array_equal(short, long)
  assert changed >= 2, outs  # the penalty changes the ranking, not just the tie-breaks


def test_budget_and_modality_errors(tiny):
  cfg, vocab, params = tiny
  with pytest.raises(ValueError, match="cannot hold"):
    generate(params, cfg, vocab, prompts_of(vocab), max_new_tokens=5, output_modality="image")
  with pytest.raises(ValueError, match="does not combine with CFG"):
    generate(
      params,
      cfg,
      vocab,
      prompts_of(vocab),
      max_new_tokens=40,
      output_modality="image",
      beam_size=2,
      cfg_scale=2.0,
    )


@pytest.mark.parametrize("penalty", [1.0, 1.15])
def test_beam_under_image_constraints_gives_exactly_one_image(tiny, penalty):
  """MIO's image preset: beam 5 (+ repetition penalty) inside the image span's constraints."""
  cfg, vocab, params = tiny
  outs = generate(
    params,
    cfg,
    vocab,
    prompts_of(vocab),
    max_new_tokens=12,
    output_modality="image",
    image_tokens=8,
    beam_size=5,
    sampling=smp.SamplingConfig(temperature=0.0, repetition_penalty=penalty),
  )
  for o in outs:
    assert len(o) == 10 and o[0] == vocab.special_id("<image>")
    assert o[-1] == vocab.special_id("</image>")
    assert (vocab.modality_of(o[1:-1]) == IMAGE).all()


def test_beam_under_speech_constraints_gives_a_well_formed_span(tiny):
  from mio_jax.generate.segments import split_segments

  cfg, vocab, params = tiny
  n_new = 2 + vocab.speech_layers * 3
  outs = generate(
    params,
    cfg,
    vocab,
    prompts_of(vocab),
    max_new_tokens=n_new,
    beam_size=5,
    output_modality="speech",
    max_speech_tokens=3,
    sampling=smp.SamplingConfig(temperature=0.0, repetition_penalty=1.15),
  )
  for o in outs:
    (seg,) = split_segments(o, vocab)
    assert seg.modality == "speech" and seg.complete
    assert seg.codes.shape[0] == vocab.speech_layers and 1 <= seg.codes.shape[1] <= 3


def test_sharded_params_give_the_same_tokens(tiny):
  cfg, vocab, params = tiny
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]), ("fsdp",))

  def shard(x):
    # Split the first axis divisible by 8 across devices (as FSDP would); replicate the rest.
    axis = next((i for i, n in enumerate(x.shape) if n % 8 == 0), None)
    spec = [None] * x.ndim
    if axis is not None:
      spec[axis] = "fsdp"
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec)))

  sharded = jax.tree.map(shard, params)
  assert any(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(sharded))
  kw = dict(max_new_tokens=N_NEW, output_modality="text")
  for a, b in zip(
    generate(sharded, cfg, vocab, prompts_of(vocab), **kw),
    generate(params, cfg, vocab, prompts_of(vocab), **kw),
  ):
    np.testing.assert_array_equal(a, b)


def test_cfg_through_api_gives_one_image_span(tiny):
  cfg, vocab, params = tiny
  outs = generate(
    params,
    cfg,
    vocab,
    prompts_of(vocab),
    max_new_tokens=12,
    output_modality="image",
    image_tokens=8,
    cfg_scale=3.0,
    bos_id=1,
    sampling=smp.mio_sampling(),
    rng=jax.random.PRNGKey(5),
  )
  for o in outs:
    assert (
      len(o) == 10 and o[0] == vocab.special_id("<image>") and o[-1] == vocab.special_id("</image>")
    )
    assert (vocab.modality_of(o[1:-1]) == IMAGE).all()
