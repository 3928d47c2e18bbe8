"""The unified token space: text, specials, image codes and speech codes in one id range.

Layout (contiguous, in this order):

    [0, text_size)                     text (the base LM's sentencepiece ids)
    [specials_start, + len(specials))  the layout's special block (below)
    [image_start, + image_codes)       image codes (32 per image in MIO)
    [speech_start(l), + speech_codes)  speech codes of RVQ layer l (0 = content, 1..3 = timbre)
    [size, padded_size)                padding rows up to a multiple of `pad_multiple` (unsampled)

Two named layouts (`layout_name`) differ only in the special block and in which ids the roles
`<|im_start|>`, `<|im_end|>`, `<pad>` and `<cfg_null>` get; always ask `special_id(role)`:

    mio_jax  (default)  <image> </image> <spch> </spch> <|im_start|> <|im_end|> <pad> <cfg_null>
    mio      MIO's released checkpoints (config.json `*_id` keys): <speech_placeholder> </spch>
             <image_placeholder> <spch> </image> <image>; ChatML is Yi's own text ids
             (<|im_start|> 6, <|im_end|> 7); <pad> is text id 0 (MIO's pad_token_id); no CFG-null
             token, so <cfg_null> is <image_placeholder>, a token MIO never feeds the model (its
             prompts replace placeholders by media), i.e. a free "no condition" marker.

Every shard manifest and checkpoint stores `fingerprint()`; a mismatch is an error, never silent.
The `mio_jax` fingerprint is unchanged from before layouts had names.
Works on numpy arrays and on jax arrays inside `jit` (only comparisons and arithmetic are used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np

from mio_jax.errors import VocabMismatchError

# The `mio_jax` layout's special block (kept as a module constant for existing users).
SPECIALS = (
  "<image>",
  "</image>",
  "<spch>",
  "</spch>",
  "<|im_start|>",
  "<|im_end|>",
  "<pad>",
  "<cfg_null>",
)
# MIO's block in its order (ids 64000..64005 in the release).
MIO_SPECIALS = (
  "<speech_placeholder>",
  "</spch>",
  "<image_placeholder>",
  "<spch>",
  "</image>",
  "<image>",
)
# Roles that `mio` maps outside its block: Yi text ids, or an alias inside the block.
MIO_TEXT_ROLES = {"<pad>": 0, "<|im_start|>": 6, "<|im_end|>": 7}
MIO_ALIASES = {"<cfg_null>": "<image_placeholder>"}
LAYOUTS = ("mio_jax", "mio")

# Modality codes returned by `modality_of`. Order is stable: metrics and tests index by it.
TEXT, SPECIAL, IMAGE, SPEECH, PADDING = 0, 1, 2, 3, 4
MODALITY_NAMES = ("text", "special", "image", "speech", "padding")

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Sizes of each id block. MIO-7B: text 64,000, image 8,192, speech 4 x 1,024."""

  text_size: int
  image_codes: int = 8192
  speech_codes: int = 1024
  speech_layers: int = 4
  pad_multiple: int = 128
  layout_name: str = "mio_jax"  # one of LAYOUTS; see the module docstring

  def __post_init__(self):
    for name in ("text_size", "image_codes", "speech_codes", "speech_layers", "pad_multiple"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"Vocab.{name} must be a non-negative int, got {value!r}")
    if self.text_size == 0 or self.pad_multiple == 0:
      raise ValueError("Vocab.text_size and Vocab.pad_multiple must be positive")
    if self.layout_name not in LAYOUTS:
      raise ValueError(f"Vocab.layout_name {self.layout_name!r} not in {LAYOUTS}")
    if self.layout_name == "mio" and self.text_size <= max(MIO_TEXT_ROLES.values()):
      raise ValueError(
        f"the mio layout needs text ids {MIO_TEXT_ROLES} (text_size > 7), got "
        f"text_size {self.text_size}"
      )

  @classmethod
  def mio(cls, **sizes) -> Vocab:
    """MIO's released layout (MIO-7B: text 64,000 .. size 76,294); `sizes` override the blocks."""
    return cls(**{"text_size": 64_000, **sizes, "layout_name": "mio"})

  @property
  def specials(self) -> tuple[str, ...]:
    """The token strings of the special block, in id order."""
    return MIO_SPECIALS if self.layout_name == "mio" else SPECIALS

  @property
  def special_names(self) -> tuple[str, ...]:
    """Every name `special_id` accepts: the block plus the roles mapped elsewhere."""
    extra = (*MIO_TEXT_ROLES, *MIO_ALIASES) if self.layout_name == "mio" else ()
    return self.specials + extra

  # ---- block boundaries -------------------------------------------------------------------
  @property
  def specials_start(self) -> int:
    return self.text_size

  @property
  def image_start(self) -> int:
    return self.specials_start + len(self.specials)

  def speech_start(self, layer: int = 0) -> int:
    if not 0 <= layer < self.speech_layers:
      raise ValueError(f"speech layer {layer} outside [0, {self.speech_layers})")
    return self.image_start + self.image_codes + layer * self.speech_codes

  @property
  def size(self) -> int:
    """Number of real ids (before padding)."""
    return self.image_start + self.image_codes + self.speech_layers * self.speech_codes

  @property
  def padded_size(self) -> int:
    """Embedding/LM-head rows: `size` rounded up to a multiple of `pad_multiple` (TPU lanes)."""
    return -(-self.size // self.pad_multiple) * self.pad_multiple

  @property
  def multimodal_rows(self) -> int:
    """Ids added on top of a text-only base model (specials + image + speech)."""
    return self.size - self.text_size

  @property
  def hf_rows(self) -> int:
    """Embedding rows of an HF export: MIO's release has exactly `size`; `mio_jax` exports keep
    the padding rows (as they always have)."""
    return self.size if self.layout_name == "mio" else self.padded_size

  # ---- (modality, code) <-> id --------------------------------------------------------------
  def special_id(self, name: str) -> int:
    """The id of a special token or role (`<pad>`, `<cfg_null>`, ChatML) in this layout."""
    if self.layout_name == "mio":
      if name in MIO_TEXT_ROLES:
        return MIO_TEXT_ROLES[name]
      name = MIO_ALIASES.get(name, name)
    if name not in self.specials:
      raise KeyError(
        f"unknown special token {name!r} in vocab layout {self.layout_name!r}; "
        f"known: {self.special_names}"
      )
    return self.specials_start + self.specials.index(name)

  def special_ids(self) -> dict[str, int]:
    return {name: self.special_id(name) for name in self.special_names}

  def added_tokens(self) -> dict[str, int]:
    """Token string -> id of every id above the text range, as MIO's tokenizer spells them:
    the special block, `<img{c}>`, and `<spch{l * speech_codes + c}>` for speech layer l."""
    out = {name: self.specials_start + i for i, name in enumerate(self.specials)}
    out.update((f"<img{c}>", self.image_start + c) for c in range(self.image_codes))
    first = self.image_start + self.image_codes
    out.update((f"<spch{i}>", first + i) for i in range(self.speech_layers * self.speech_codes))
    return out

  def image_id(self, codes):
    return check_codes(codes, self.image_codes, "image codes") + np.int32(self.image_start)

  def speech_id(self, codes, layer: int = 0):
    codes = check_codes(codes, self.speech_codes, f"speech layer {layer} codes")
    return codes + np.int32(self.speech_start(layer))

  def image_code(self, ids):
    """Inverse of `image_id`; raises if any id is not an image id."""
    ids = np.asarray(ids)
    if ids.size and (
      ids.min() < self.image_start or ids.max() >= self.image_start + self.image_codes
    ):
      raise ValueError("image_code got ids outside the image range")
    return (ids - self.image_start).astype(np.int32)

  def speech_code(self, ids, layer: int = 0):
    """Inverse of `speech_id` for one layer; raises if any id is outside that layer's block."""
    ids = np.asarray(ids)
    start = self.speech_start(layer)
    if ids.size and (ids.min() < start or ids.max() >= start + self.speech_codes):
      raise ValueError(f"speech_code got ids outside speech layer {layer}")
    return (ids - start).astype(np.int32)

  def modality_of(self, ids):
    """Modality code (TEXT/SPECIAL/IMAGE/SPEECH/PADDING) per id. numpy in → numpy out; jit-safe."""
    ids = _as_array(ids)
    bounds = (
      self.specials_start,
      self.image_start,
      self.speech_start(0) if self.speech_layers else self.image_start + self.image_codes,
      self.size,
    )
    # Counting crossed boundaries maps each block to its index: 0 text, 1 special, 2 image,
    # 3 speech, 4 pad.
    out = (ids >= bounds[0]).astype(np.int32)
    for b in bounds[1:]:
      out = out + (ids >= b).astype(np.int32)
    return out

  def speech_layer_of(self, ids):
    """Speech layer index per id (-1 for non-speech ids). jit-safe."""
    ids = _as_array(ids)
    first = self.image_start + self.image_codes
    layer = (ids - first) // max(self.speech_codes, 1)
    is_speech = (ids >= first) & (ids < self.size)
    return layer * is_speech - (1 - is_speech.astype(np.int32))

  # ---- span builders --------------------------------------------------------------------------
  def image_span(self, codes) -> np.ndarray:
    """`<image> c_1 .. c_n </image>` for one image's codes."""
    return np.concatenate(
      [[self.special_id("<image>")], self.image_id(np.ravel(codes)), [self.special_id("</image>")]]
    ).astype(np.int32)

  def speech_span(self, content, timbre=None) -> np.ndarray:
    """Speech input: `<spch> content </spch>`. Speech output (timbre given, shape [layers-1, T]):
    `<spch> content timbre_1 .. timbre_{L-1} </spch>` — MIO's sequential layout, equal lengths."""
    content = np.ravel(content)
    blocks = [self.speech_id(content, 0)]
    if timbre is not None:
      timbre = np.asarray(timbre)
      if timbre.ndim != 2 or timbre.shape != (self.speech_layers - 1, content.size):
        raise ValueError(
          f"timbre must have shape {(self.speech_layers - 1, content.size)} "
          f"(layers 1..{self.speech_layers - 1}, same length as content), got {timbre.shape}"
        )
      blocks += [self.speech_id(timbre[i], i + 1) for i in range(timbre.shape[0])]
    return np.concatenate(
      [[self.special_id("<spch>")], *blocks, [self.special_id("</spch>")]]
    ).astype(np.int32)

  # ---- identity -------------------------------------------------------------------------------
  def layout(self) -> dict:
    out = {
      "format_version": FORMAT_VERSION,
      "text_size": self.text_size,
      "specials": list(self.specials),
      "image_codes": self.image_codes,
      "speech_codes": self.speech_codes,
      "speech_layers": self.speech_layers,
      "pad_multiple": self.pad_multiple,
      "specials_start": self.specials_start,
      "image_start": self.image_start,
      "speech_start": self.image_start + self.image_codes,
      "size": self.size,
      "padded_size": self.padded_size,
    }
    if self.layout_name != "mio_jax":  # the default's dict (hence fingerprint) predates names
      out["layout_name"] = self.layout_name
      out["roles"] = self.special_ids()
    return out

  def fingerprint(self) -> str:
    """Short hash of the layout; equal fingerprints mean ids mean the same thing."""
    blob = json.dumps(self.layout(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

  def to_json(self) -> str:
    return json.dumps(
      {**self.layout(), "fingerprint": self.fingerprint()}, indent=2, sort_keys=True
    )

  @classmethod
  def from_json(cls, text: str) -> Vocab:
    d = json.loads(text)
    vocab = cls(
      text_size=d["text_size"],
      image_codes=d["image_codes"],
      speech_codes=d["speech_codes"],
      speech_layers=d["speech_layers"],
      pad_multiple=d["pad_multiple"],
      layout_name=d.get("layout_name", "mio_jax"),
    )
    if "fingerprint" in d and d["fingerprint"] != vocab.fingerprint():
      raise ValueError(
        f"vocab JSON fingerprint {d['fingerprint']} does not match its layout "
        f"({vocab.fingerprint()})"
      )
    return vocab

  def check_fingerprint(self, other: str, where: str) -> None:
    if other != self.fingerprint():
      raise VocabMismatchError(
        f"{where}: vocab fingerprint {other} does not match this model's vocab "
        f"{self.fingerprint()} (layout {self.layout_name}, text {self.text_size}, "
        f"image {self.image_codes}, speech {self.speech_layers}x"
        f"{self.speech_codes}); token ids would mean different things"
      )


def _as_array(ids):
  """Python ints/lists → numpy; numpy and jax arrays (also tracers) pass through unchanged."""
  return ids if hasattr(ids, "dtype") else np.asarray(ids)


def check_codes(codes, n: int, what: str, ndim: int | None = None) -> np.ndarray:
  """Token codes checked before they become ids or are decoded → int32: integers in [0, n) and,
  with `ndim`, a non-empty array of that rank. The one check for every tokenizer and the vocab."""
  codes = np.asarray(codes)
  if ndim is not None and (codes.ndim != ndim or codes.size == 0):
    raise ValueError(
      f"{what}: expected a non-empty rank-{ndim} code array, got shape {codes.shape}"
    )
  if codes.size and not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{what}: codes must be integers, got {codes.dtype}")
  if codes.size and (codes.min() < 0 or codes.max() >= n):
    raise ValueError(f"{what}: codes must lie in [0, {n}), got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)
