"""Every MIO output mode from the CLI and the API on a tiny random checkpoint: interleaved answers
(answer.md in generation order), speech-to-speech, image editing, chat history / interactive,
video as frames + GIF / MP4, and the decoding presets."""

import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from mio_jax.generate import chat as chat_lib
from mio_jax.generate import modes, outputs, presets, prompting
from mio_jax.generate.segments import split_segments
from tests.test_generate_cli import ROOT, _cli, demo_corpus, write_checkpoint

LINK = re.compile(r"\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return demo_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus):
  return write_checkpoint(tmp_path_factory.mktemp("ckpt"), corpus)


@pytest.fixture(scope="module")
def model(workdir):
  from mio_jax.generate import io

  return io.load_model(str(workdir))


def test_presets_set_the_documented_parameters(monkeypatch):
  table = {
    "text": (5, 0.0, 1.0, 1.0),
    "image": (5, 0.0, 1.0, 1.15),
    "tts": (1, 1.0, 0.7, 1.15),
    "s2s": (5, 0.0, 1.0, 1.15),
    "video": (1, 1.0, 0.7, 1.15),
    "interleaved": (1, 1.0, 0.7, 1.15),
  }
  for name, (beam, temp, top_p, rep) in table.items():
    p = presets.get_preset(name)
    assert (p.beam_size, p.sampling.temperature, p.sampling.top_p) == (beam, temp, top_p), name
    assert p.sampling.repetition_penalty == rep and p.max_new_tokens == 512, name
  # `sample` hands the preset's settings to `generate`; explicit arguments win.
  seen = {}
  monkeypatch.setattr(modes, "generate", lambda *a, **kw: seen.update(kw) or [np.zeros(0, int)])
  monkeypatch.setattr(modes, "split_segments", lambda ids, vocab: [])
  vocab = types.SimpleNamespace(speech_layers=4, special_id=lambda name: 7)
  fake = types.SimpleNamespace(
    tokenizers=types.SimpleNamespace(image=None),
    vocab=vocab,
    builder=types.SimpleNamespace(text=types.SimpleNamespace(bos_id=1, eos_id=2), vocab=vocab),
    params=None,
    model_cfg=None,
    placement=None,
  )
  modes.sample(fake, np.ones(3), "speech", preset=presets.get_preset("tts"))
  assert seen["beam_size"] == 1 and seen["max_new_tokens"] == 512
  assert seen["sampling"] == presets.PRESETS["tts"].sampling
  modes.sample(
    fake, np.ones(3), "image", preset=presets.get_preset("image"), max_new_tokens=40, beam_size=2
  )
  assert seen["beam_size"] == 2 and seen["max_new_tokens"] == 40


def test_answer_md_links_exist_in_generation_order(model, tmp_path):
  v = model.vocab
  text = model.tokenizers.text.encode("a red circle")
  image = v.image_span(np.arange(model.tokenizers.image.tokens_per_image) % v.image_codes)
  speech = v.speech_span(np.arange(5), np.tile(np.arange(5), (v.speech_layers - 1, 1)))
  ids = np.concatenate([text, image, text, speech, image, text])
  markdown, written = outputs.write_answer(model.tokenizers, split_segments(ids, v), str(tmp_path))
  links = LINK.findall(markdown)
  assert links == ["answer_image0.png", "answer_speech0.wav", "answer_image1.png"]
  assert [os.path.basename(p) for p in written] == links + ["answer.md"]
  assert all((tmp_path / rel).is_file() for rel in links)
  assert markdown.index("![image 0]") < markdown.index("[speech 0]") < markdown.index("![image 1]")


def test_cli_interleaved_preset_writes_answer_md(workdir, tmp_path):
  paths = _cli(
    workdir, tmp_path, "--prompt=a red circle and", "--preset=interleaved", "--max_new_tokens=48"
  )
  assert paths[-1].endswith("answer.md")
  with open(paths[-1]) as f:
    links = LINK.findall(f.read())
  assert [os.path.join(str(tmp_path), rel) for rel in links] == paths[:-1]


def test_speech_to_speech_uses_the_voice_prompt(model, corpus, tmp_path):
  from mio_jax.cli.generate import encode_prompt, read_inputs

  wav = next((corpus / "raw").rglob("*.wav"))
  media = read_inputs(model.tokenizers, speech=str(wav))
  prompt = encode_prompt(model, "", media, "speech", chat=False)
  b = model.builder
  system = prompting.chat_prompt(
    b, prompting.Media(speech=media.speech), None, system=prompting.VOICE_SYSTEM
  )
  np.testing.assert_array_equal(prompt, system)  # always the chat layout with the voice system
  v = model.vocab
  # MIO's voice system prompt names <spch> and </spch> (its tokenizer reads them as the tokens):
  # the user's speech span is the last one.
  close = int(np.flatnonzero(prompt == v.special_id("</spch>"))[-1])
  assert prompt[close + 1] == v.special_id("<|im_end|>")  # the user turn is speech only
  segments = modes.sample(
    model, prompt, "speech", preset=presets.get_preset("s2s"), max_new_tokens=2 + 4 * 6
  )
  written = modes.write_outputs(model, segments, str(tmp_path), "speech")
  assert [os.path.basename(p) for p in written] == ["out_speech0.wav"]


def test_image_editing_writes_an_image(model, corpus, tmp_path):
  from mio_jax.cli.generate import encode_prompt, read_inputs

  png = corpus / "raw" / "images" / "test" / "image_00000.png"
  media = read_inputs(model.tokenizers, image=str(png))
  prompt = encode_prompt(model, "make it blue", media, "image", chat=False)
  b = model.builder
  np.testing.assert_array_equal(
    prompt, np.concatenate([[b.text.bos_id], b.image(media.image), b.words("make it blue")])
  )
  segments = modes.sample(
    model, prompt, "image", preset=presets.get_preset("image"), max_new_tokens=40
  )
  n = model.tokenizers.image.tokens_per_image
  assert [s.modality for s in segments] == ["image"] and segments[0].codes.size == n
  written = modes.write_outputs(model, segments, str(tmp_path), "image")
  assert [os.path.basename(p) for p in written] == ["out_image0.png"]


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_video_as_frames_and_animation(model, tmp_path, fmt):
  from mio_jax.io.media import read_video

  prompt = prompting.build_prompt(model.builder, "draw_video", prompting.Media(), "a red circle")
  segments = modes.sample(
    model, prompt, "video", preset=presets.get_preset("video"), max_new_tokens=34
  )
  written = modes.write_outputs(model, segments, str(tmp_path), "video", fmt)
  frames = [p for p in written if p.endswith(".png")]
  assert len(frames) == len(segments) >= 1 and written[-1].endswith(f"out.{fmt}")
  assert read_video(written[-1]).shape[0] == len(frames)


def test_history_file_round_trip(workdir, model, corpus, tmp_path):
  png = corpus / "raw" / "images" / "test" / "image_00000.png"
  history = tmp_path / "in" / "history.json"
  history.parent.mkdir()
  os.link(png, history.parent / "cat.png")
  turns = [
    {"role": "user", "content": "What is this?", "media": {"image": "cat.png"}},
    {"role": "assistant", "content": "A circle."},
    {"role": "user", "content": "And its colour?"},
  ]
  history.write_text(json.dumps(turns))
  assert [t.to_json() for t in chat_lib.load_history(str(history))][1:] == turns[1:]
  out = tmp_path / "out"
  paths = _cli(workdir, out, f"--history={history}", "--output_modality=text", "--max_new_tokens=8")
  assert paths[-2].endswith("answer.md") and paths[-1] == str(out / "history.json")
  saved = json.loads((out / "history.json").read_text())
  assert len(saved) == 4 and saved[-1]["role"] == "assistant"
  assert os.path.isfile(os.path.join(out, saved[0]["media"]["image"]))
  # The prompt for the next turn extends the prompt that produced this reply.
  old, new = chat_lib.load_history(str(history)), chat_lib.load_history(str(out / "history.json"))
  media = lambda ts: [
    chat_lib.encode_turn_media(model.tokenizers, t, modes.io.read_media_files) for t in ts
  ]
  sys_ = prompting.STANDARD_SYSTEM
  p_old = chat_lib.chat_prompt(model.builder, old, media(old), sys_)
  p_new = chat_lib.chat_prompt(model.builder, new, media(new), sys_)
  np.testing.assert_array_equal(p_new[: len(p_old)], p_old)


def test_interactive_reads_turns_from_stdin(workdir, tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "mio_jax.generate",
      f"--workdir={workdir}",
      f"--out={tmp_path}",
      "--interactive",
      "--output_modality=text",
      "--max_new_tokens=6",
    ],
    input="hello there\n\nwhat next\n",
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = proc.stdout.split()
  assert str(tmp_path / "turn0" / "answer.md") in printed
  assert str(tmp_path / "turn1" / "answer.md") in printed
  saved = json.loads((tmp_path / "history.json").read_text())
  assert [t["role"] for t in saved] == ["user", "assistant", "user", "assistant"]
  assert [saved[0]["content"], saved[2]["content"]] == ["hello there", "what next"]
