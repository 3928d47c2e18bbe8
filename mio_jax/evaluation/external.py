"""External judges through `transformers` (torch, CPU is enough), loaded from local folders only.

  Transcriber(DIR)   a Whisper checkpoint (WhisperForConditionalGeneration + WhisperProcessor):
                     TTS WER transcribes the generated speech with it, not with the model under
                     test (`evaluate --tts_asr_model=DIR`)
  ClipScorer(DIR)    a CLIP checkpoint (CLIPModel + CLIPProcessor): cosine similarity of a
                     generated image to its prompt (image-text) and to the reference image
                     (image-image) (`evaluate --clip_model=DIR`)

`local_files_only=True` everywhere: a missing or partial folder is an error naming it, never a
download. Greedy decoding and eval mode make both deterministic.
"""

from __future__ import annotations

import os

import numpy as np

from mio_jax.io.media import resample


def _check_dir(path: str, flag: str) -> str:
  if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "config.json")):
    raise FileNotFoundError(
      f"{flag}={path}: not a local model folder with config.json (save_pretrained output)"
    )
  return path


class Transcriber:
  """Speech → English text with a local Whisper checkpoint."""

  def __init__(self, model_dir: str, max_new_tokens: int = 128, batch_size: int = 8):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    _check_dir(model_dir, "--tts_asr_model")
    self.processor = WhisperProcessor.from_pretrained(model_dir, local_files_only=True)
    self.model = WhisperForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
    self.model.eval()
    self.rate = self.processor.feature_extractor.sampling_rate
    # Whisper rejects budgets past its decoder length (start tokens take a few positions).
    room = self.model.config.max_target_positions - 8
    self.max_new_tokens, self.batch_size = min(max_new_tokens, room), batch_size
    # Multilingual checkpoints: English transcription, not language detection.
    langs = getattr(self.model.generation_config, "lang_to_id", None) or {}
    self.lang = {"language": "en", "task": "transcribe"} if "<|en|>" in langs else {}

  def __call__(self, waves: list[np.ndarray], sample_rate: int) -> list[str]:
    import torch

    out = []
    for start in range(0, len(waves), self.batch_size):
      chunk = [
        resample(np.asarray(w, np.float32), sample_rate, self.rate)
        for w in waves[start : start + self.batch_size]
      ]
      features = self.processor.feature_extractor(
        chunk, sampling_rate=self.rate, return_tensors="pt"
      ).input_features
      with torch.no_grad():
        ids = self.model.generate(
          features, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, **self.lang
        )
      out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
    return out


class ClipScorer:
  """CLIP embeddings (L2-normalised) and cosine similarities."""

  def __init__(self, model_dir: str):
    from transformers import CLIPModel, CLIPProcessor

    _check_dir(model_dir, "--clip_model")
    self.processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
    self.model = CLIPModel.from_pretrained(model_dir, local_files_only=True)
    self.model.eval()

  @staticmethod
  def _unit(x) -> np.ndarray:
    x = getattr(x, "pooler_output", x)  # newer transformers return an output object
    x = np.asarray(x.detach().cpu().numpy(), np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  def image_embeds(self, images: list[np.ndarray]) -> np.ndarray:
    import torch

    pixels = self.processor(
      images=[np.asarray(im, np.uint8) for im in images], return_tensors="pt"
    )["pixel_values"]
    with torch.no_grad():
      return self._unit(self.model.get_image_features(pixel_values=pixels))

  def text_embeds(self, texts: list[str]) -> np.ndarray:
    import torch

    max_len = self.model.config.text_config.max_position_embeddings
    enc = self.processor(
      text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_len
    )
    with torch.no_grad():
      return self._unit(
        self.model.get_text_features(
          input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        )
      )

  def image_text(self, images, texts) -> np.ndarray:
    """[N] cosine similarity of image i to text i."""
    return np.sum(self.image_embeds(images) * self.text_embeds(texts), axis=-1)

  def image_image(self, images, references) -> np.ndarray:
    """[N] cosine similarity of image i to reference image i."""
    return np.sum(self.image_embeds(images) * self.image_embeds(references), axis=-1)
