"""Sentencepiece text tokenizer: exact round trips, determinism, loading a shipped
tokenizer.model."""

import numpy as np
import pytest

from data_pipelines.tokenizers import SentencePieceTokenizer, TextTokenizer, train_sentencepiece

WORDS = "the a red blue green square circle triangle on left of right says hello world cat".split()


def corpus(n=400, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, 8)) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return train_sentencepiece(corpus(), str(tmp_path_factory.mktemp("sp")), vocab_size=1000)


def test_interface_and_specials(tok):
  assert isinstance(tok, TextTokenizer)
  assert 267 <= tok.vocab_size <= 1000  # a small corpus may have fewer pieces than requested
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, -1)


@pytest.mark.parametrize(
  "text",
  [
    "a red square on the left.",
    "  two  spaces\tand\nnewlines ",
    "Ünïcödé 漢字 🙂 digits 12345",
    "x",
  ],
)
def test_round_trip_exact(tok, text):
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.ndim == 1
  assert ids.min() >= 0 and ids.max() < tok.vocab_size
  assert tok.bos_id not in ids and tok.eos_id not in ids  # encode adds no BOS/EOS
  assert tok.decode(ids) == text


def test_in_domain_text_compresses(tok):
  text = "the red square says hello world."
  assert len(tok.encode(text)) < len(text) / 2


def test_deterministic_training(tmp_path):
  a = train_sentencepiece(corpus(), str(tmp_path / "a"), vocab_size=600)
  b = train_sentencepiece(corpus(), str(tmp_path / "b"), vocab_size=600)

  # The .model files differ only in the output path they record; pieces and scores are equal.
  def pieces(t):
    return [(t._sp.IdToPiece(i), t._sp.GetScore(i)) for i in range(t.vocab_size)]

  assert pieces(a) == pieces(b)


def test_save_load_round_trip(tok, tmp_path):
  tok.save(str(tmp_path / "text"))
  loaded = SentencePieceTokenizer.load(str(tmp_path / "text"))
  text = "green triangle right of the cat."
  np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))
  assert loaded.vocab_size == tok.vocab_size


def test_bad_inputs(tok, tmp_path):
  with pytest.raises(ValueError, match="empty"):
    tok.encode("")
  with pytest.raises(ValueError, match="must be str"):
    tok.encode(b"bytes")
  with pytest.raises(ValueError, match=r"\[0, "):
    tok.decode([tok.vocab_size])
  with pytest.raises(ValueError, match="not found"):
    SentencePieceTokenizer(str(tmp_path / "missing.model"))
  bad = tmp_path / "tokenizer.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="cannot read"):
    SentencePieceTokenizer(str(bad))
  with pytest.raises(ValueError, match="no non-empty"):
    train_sentencepiece(["", ""], str(tmp_path / "x"), 1000)
