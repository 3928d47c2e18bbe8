"""Tiny random Whisper and CLIP checkpoints for the external-judge plumbing tests: each written
with save_pretrained (model + processor, BPE files with a handful of tokens) into a folder."""

import json
import os

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _bpe_files(folder, tokens):
  """vocab.json + an empty merges.txt: every token is a single symbol, no merges."""
  vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump(vocab, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")
  return os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")


def whisper(folder, emit="h"):
  """A 1-layer Whisper whose decoder always predicts the token `emit` (its final layer norm
  outputs a constant that lines up with that token's embedding), so it transcribes anything as
  `emit` repeated."""
  import torch
  from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
  )

  os.makedirs(folder, exist_ok=True)
  specials = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|notimestamps|>",
  ]
  vocab, merges = _bpe_files(folder, list(LETTERS) + ["\u0120"] + specials)
  eot = "<|endoftext|>"
  tok = WhisperTokenizer(vocab, merges, unk_token=eot, bos_token=eot, eos_token=eot, pad_token=eot)
  tok.add_special_tokens({"additional_special_tokens": specials[1:]})
  ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
  cfg = WhisperConfig(
    vocab_size=len(tok),
    num_mel_bins=80,
    encoder_layers=1,
    decoder_layers=1,
    d_model=16,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_target_positions=64,
    pad_token_id=ids[eot],
    bos_token_id=ids[eot],
    eos_token_id=ids[eot],
    decoder_start_token_id=ids["<|startoftranscript|>"],
  )
  torch.manual_seed(0)
  model = WhisperForConditionalGeneration(cfg)
  with torch.no_grad():
    model.model.decoder.layer_norm.weight.zero_()
    model.model.decoder.layer_norm.bias.fill_(1.0)
    model.model.decoder.embed_tokens.weight[tok.convert_tokens_to_ids(emit)] = 10.0
  model.save_pretrained(folder)
  WhisperProcessor(
    feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok
  ).save_pretrained(folder)
  return folder


def clip(folder):
  """A 1-layer CLIP over 32x32 images and a letters-only tokenizer."""
  import torch
  from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

  os.makedirs(folder, exist_ok=True)
  tokens = list(LETTERS) + [c + "</w>" for c in LETTERS] + ["<|startoftext|>", "<|endoftext|>"]
  tok = CLIPTokenizer(*_bpe_files(folder, tokens))
  text = dict(
    vocab_size=len(tok),
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
    eos_token_id=tok.eos_token_id,
    bos_token_id=tok.bos_token_id,
    pad_token_id=tok.pad_token_id,
  )
  vision = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
  )
  torch.manual_seed(0)
  CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(
    folder
  )
  images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
  CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder)
  return folder
