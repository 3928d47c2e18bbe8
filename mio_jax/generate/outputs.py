"""Answers as files: interleaved Markdown in generation order, and keyframes as GIF / MP4.

answer.md              text, with each image / speech part inline where it was generated:
                       ![image 0](answer_image0.png) ... [speech 0](answer_speech0.wav)
answer_image0.png ..   the parts themselves, linked by relative paths
NAME.gif / NAME.mp4    keyframes as an animation (Pillow; MP4 through PyAV)
"""

from __future__ import annotations

import io as _io

import numpy as np

from mio_jax.generate.segments import Segment
from mio_jax.io import paths
from mio_jax.io.media import write_image, write_wav

VIDEO_FORMATS = ("gif", "mp4")
FRAME_MS = 500  # keyframes are sparse: half a second each reads as a slideshow, not a flicker


def _text(tokenizers, ids) -> str:
  ids = np.asarray(ids)
  ids = ids[ids < tokenizers.text.vocab_size]  # ids past the tokenizer's pieces are dropped
  return tokenizers.text.decode(ids) if ids.size else ""


def answer_text(tokenizers, segments: list[Segment]) -> str:
  """The text parts only, joined (a chat history keeps media as files)."""
  return "".join(_text(tokenizers, s.ids) for s in segments if s.modality == "text").strip()


def write_answer(tokenizers, segments: list[Segment], out_dir: str, name: str = "answer"):
  """Writes NAME.md and its parts; returns (markdown, [paths]: parts in order, then NAME.md)."""
  paths.makedirs(out_dir)
  lines, written, counts = [], [], {"image": 0, "speech": 0}
  for seg in segments:
    if seg.modality == "text":
      text = _text(tokenizers, seg.ids)
      if text:
        lines.append(text)
    elif seg.modality in counts and seg.complete and seg.codes is not None and seg.codes.size:
      k, kind = counts[seg.modality], seg.modality
      counts[kind] += 1
      rel = f"{name}_{kind}{k}." + ("png" if kind == "image" else "wav")
      written.append(paths.join(out_dir, rel))
      if kind == "image":
        write_image(written[-1], tokenizers.image.decode(seg.codes))
        lines.append(f"![image {k}]({rel})")
      else:
        wave = tokenizers.speech.decode(seg.codes)
        write_wav(written[-1], wave, tokenizers.speech.sample_rate)
        lines.append(f"[speech {k}]({rel})")
  markdown = "\n\n".join(lines) + "\n"
  written.append(paths.join(out_dir, f"{name}.md"))
  paths.write_text(written[-1], markdown)
  return markdown, written


def write_animation(frames_NxHxWx3, path: str, fmt: str = "gif", frame_ms: int = FRAME_MS) -> str:
  """Frames → an animated GIF (Pillow) or an H.264 MP4 (PyAV); returns `path`."""
  frames = [np.asarray(f, np.uint8) for f in frames_NxHxWx3]
  if not frames:
    raise ValueError("no frames to write")
  buf = _io.BytesIO()
  if fmt == "gif":
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(
      buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0
    )
  elif fmt == "mp4":
    _write_mp4(frames, buf, frame_ms)
  else:
    raise ValueError(f"video format {fmt!r} not in {VIDEO_FORMATS}")
  paths.write_bytes(path, buf.getvalue())
  return path


def _write_mp4(frames, buf, frame_ms: int) -> None:
  from fractions import Fraction

  import av

  h, w = frames[0].shape[:2]
  with av.open(buf, mode="w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=Fraction(1000, frame_ms))
    # yuv420p needs even sides; keyframes from the image tokenizer normally have them.
    stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
    for f in frames:
      frame = av.VideoFrame.from_ndarray(f[: h - h % 2, : w - w % 2], format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
