"""Modality-constrained decoding: a tiny per-sequence state machine and the logit mask it implies.

Spans the decoder may emit (MIO's output layout, docs/architecture.md §5):

    <image> c_1 .. c_N </image>                                   exactly N = `image_tokens` codes
    <spch> a_1 .. a_n  b_1 .. b_n  c_1 .. c_n  d_1 .. d_n </spch>  layer 0 (content) then timbre
                                                                   layers 1..L-1, all of length n

The model chooses n: while in the content block it may emit another layer-0 id or end the block by
emitting a layer-1 id (that id is the first timbre token, so no extra separator is needed). After
that every block length is fixed at n, the next layer's block is forced, and `</spch>` is forced
after the last one. Outside spans only text ids, span openers and chat/stop specials are allowed;
`<pad>`, `<cfg_null>`, closers, raw media ids and padding rows never are.

Budget rule: a span is only opened (and a content block only grown) when the remaining token budget
can still close it, so generations cut by `max_new_tokens` never end inside a span (unless the
prompt itself opened the span).

Everything here is pure jnp on [B] int32 state, usable inside `jit`/`while_loop`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mio_jax.tokens.vocab import IMAGE, Vocab

# Span modes; also the row index into per-modality sampling tables (text, image, speech).
TEXT_MODE, IMAGE_MODE, SPEECH_MODE = 0, 1, 2
OUTPUT_MODALITIES = ("auto", "text", "image", "speech")


@dataclasses.dataclass(frozen=True)
class Constraints:
  """Static description of what may be generated (hashable: a jit static argument)."""

  vocab: Vocab
  output_modality: str = "auto"  # 'auto' | 'text' | 'image' | 'speech'
  image_tokens: int = 32  # codes per image (MIO's SEED tokenizer: 32)
  max_speech_tokens: int = 1500  # content tokens per speech span (50/s → 30 s)
  stop_ids: tuple[int, ...] | None = None  # end a sequence; None: (<|im_end|>,); (): run to budget

  def __post_init__(self):
    if self.output_modality not in OUTPUT_MODALITIES:
      raise ValueError(f"output_modality {self.output_modality!r} not in {OUTPUT_MODALITIES}")
    if self.image_tokens < 1 or self.max_speech_tokens < 1:
      raise ValueError("image_tokens and max_speech_tokens must be >= 1")
    if self.stop_ids is None:
      object.__setattr__(self, "stop_ids", (self.vocab.special_id("<|im_end|>"),))
    stop = tuple(int(s) for s in self.stop_ids)
    bad = [
      s
      for s in stop
      if not (
        0 <= s < self.vocab.specials_start
        or s in (self.vocab.special_id("<|im_end|>"), self.vocab.special_id("<|im_start|>"))
      )
    ]
    if bad:
      raise ValueError(f"stop ids {bad} must be text ids or chat specials")
    object.__setattr__(self, "stop_ids", stop)

  @property
  def forced_media(self) -> bool:
    """Image/speech outputs end as soon as their span closes."""
    return self.output_modality in ("image", "speech")

  def min_budget(self) -> int:
    """Fewest new tokens that hold one complete span of the forced modality."""
    v = self.vocab
    return {"image": self.image_tokens + 2, "speech": v.speech_layers + 2}.get(
      self.output_modality, 1
    )


class SpanState(NamedTuple):
  """Per-sequence decoding state, each [B] int32."""

  mode: jnp.ndarray  # TEXT_MODE / IMAGE_MODE / SPEECH_MODE
  layer: jnp.ndarray  # speech layer of the current block (0 = content)
  count: jnp.ndarray  # tokens emitted in the current image span / speech block
  content_len: jnp.ndarray  # n: length of the content block, fixed once it ends


def initial_state(batch: int) -> SpanState:
  z = jnp.zeros((batch,), jnp.int32)
  return SpanState(z, z, z, z)


def advance(c: Constraints, state: SpanState, token_B, valid_B=None) -> SpanState:
  """State after emitting (or reading) `token_B`. Tolerant of any input, so it can also be run over
  prompts (speech input spans hold content only; `</spch>` simply returns to text)."""
  v = c.vocab
  tok = token_B.astype(jnp.int32)
  sid = v.special_id
  opens_image, opens_speech = tok == sid("<image>"), tok == sid("<spch>")
  closes = (tok == sid("</image>")) | (tok == sid("</spch>"))
  opens = opens_image | opens_speech

  in_image = (state.mode == IMAGE_MODE) & (v.modality_of(tok) == IMAGE)
  tok_layer = v.speech_layer_of(tok)
  in_speech = (state.mode == SPEECH_MODE) & (tok_layer >= 0)
  same_block = in_speech & (tok_layer == state.layer)
  new_block = in_speech & (tok_layer > state.layer)

  mode = jnp.where(
    opens_image,
    IMAGE_MODE,
    jnp.where(opens_speech, SPEECH_MODE, jnp.where(closes, TEXT_MODE, state.mode)),
  )
  count = jnp.where(
    opens,
    0,
    jnp.where(in_image | same_block, state.count + 1, jnp.where(new_block, 1, state.count)),
  )
  content_len = jnp.where(
    opens, 0, jnp.where(new_block & (state.layer == 0), state.count, state.content_len)
  )
  layer = jnp.where(opens, 0, jnp.where(new_block, tok_layer, state.layer))
  new = SpanState(*(x.astype(jnp.int32) for x in (mode, layer, count, content_len)))
  if valid_B is None:
    return new
  return SpanState(*(jnp.where(valid_B, n, o) for n, o in zip(new, state)))


def state_after_prompt(c: Constraints, prompt_BxT, segment_ids_BxT) -> SpanState:
  """Run `advance` over a (left-padded) prompt, so a prompt ending in `<image>` continues the
  span."""

  def step(state, column):
    token_B, segment_B = column
    return advance(c, state, token_B, segment_B > 0), None

  state, _ = jax.lax.scan(
    step, initial_state(prompt_BxT.shape[0]), (prompt_BxT.T, segment_ids_BxT.T)
  )
  return state


def allowed_mask(c: Constraints, state: SpanState, remaining, vocab_size: int):
  """[B, vocab_size] bool: ids that may be emitted next. `remaining` = tokens still allowed,
  counting this one (scalar or [B])."""
  v = c.vocab
  n_layers = v.speech_layers
  remaining = jnp.asarray(remaining, jnp.int32)
  mode, layer, count, n = state
  in_text, in_image, in_speech = mode == TEXT_MODE, mode == IMAGE_MODE, mode == SPEECH_MODE

  # One contiguous id interval [lo, hi) per row covers every non-special choice.
  lo = jnp.zeros_like(mode)
  hi = jnp.zeros_like(mode)
  if c.output_modality in ("auto", "text"):
    hi = jnp.where(in_text, v.text_size, hi)
  image_open = in_image & (count < c.image_tokens)
  lo = jnp.where(image_open, v.image_start, lo)
  hi = jnp.where(image_open, v.image_start + v.image_codes, hi)

  content = in_speech & (layer == 0)
  # Another content token needs room for itself, L-1 timbre blocks of the new length and </spch>.
  # The first one is always allowed, so a span the prompt opened never leaves a row with no choice.
  grow_ok = (
    content
    & (count < c.max_speech_tokens)
    & ((count == 0) | (remaining >= 2 + (n_layers - 1) * (count + 1)))
  )
  end_ok = content & (count >= 1)
  timbre = in_speech & (layer >= 1)
  block_open = timbre & (count < n)
  next_block = (timbre & (count >= n) & (layer + 1 < n_layers)) | (end_ok & (n_layers > 1))
  # Content and layer-1 blocks are adjacent, so "grow or end" is still one interval.
  cur_lo = v.image_start + v.image_codes + layer * v.speech_codes
  lo = jnp.where(grow_ok | block_open, cur_lo, jnp.where(next_block, cur_lo + v.speech_codes, lo))
  hi = jnp.where(
    next_block,
    cur_lo + 2 * v.speech_codes,
    jnp.where(grow_ok | block_open, cur_lo + v.speech_codes, hi),
  )

  close_speech = (timbre & (count >= n) & (layer + 1 >= n_layers)) | (end_ok & (n_layers == 1))
  auto = c.output_modality == "auto"
  flags = {
    "<image>": in_text
    & ((auto & (remaining >= c.image_tokens + 2)) | (c.output_modality == "image")),
    "</image>": in_image & (count >= c.image_tokens),
    "<spch>": in_text & ((auto & (remaining >= n_layers + 2)) | (c.output_modality == "speech")),
    "</spch>": close_speech,
  }
  chat_ok = in_text & (c.output_modality in ("auto", "text"))
  for name in ("<|im_start|>", "<|im_end|>"):
    flags[name] = chat_ok
  block = v.specials  # the layout's special block; roles outside it are text ids (mio layout)
  flags_BxS = jnp.stack([flags.get(name, jnp.zeros_like(in_text)) for name in block], axis=1)

  ids_V = jnp.arange(vocab_size, dtype=jnp.int32)
  in_range = (ids_V[None, :] >= lo[:, None]) & (ids_V[None, :] < hi[:, None])
  # `<pad>` may be a text id (mio: 0): the text interval must not offer it.
  pad = v.special_id("<pad>")
  if pad < v.specials_start:
    in_range = in_range & (ids_V != pad)[None, :]
  # Specials are one static slice: write their flags in place (a [B, V] gather costs far more).
  return jax.lax.dynamic_update_slice_in_dim(in_range, flags_BxS, v.specials_start, axis=1)


def finished(c: Constraints, token_B):
  """[B] bool: this token ends the sequence (a stop id, or a closed span in forced media mode)."""
  stop = jnp.zeros(token_B.shape, bool)
  for s in c.stop_ids:
    stop = stop | (token_B == s)
  if c.forced_media:
    close = c.vocab.special_id("</image>" if c.output_modality == "image" else "</spch>")
    stop = stop | (token_B == close)
  return stop
