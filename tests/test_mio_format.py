"""MIO's prompt format, checked two ways for every prompt and conversation of MIO's infer.py:

- our string equals, byte for byte, the string MIO's code builds. The reference below is a
  literal transcription of MIO's template strings and string building (tokenization_mio.py:
  MIO_CHAT_TEMPLATE, MIO_STD_MODE_SYSTEM, MIO_VOICE_MODE_SYSTEM, `apply_chat_template`,
  `__call__`'s placeholder replacement, `tokenize_images` / `tokenize_speeches`), not our code;
- our ids equal `transformers.AutoTokenizer.from_pretrained(DIR)(string)` on a real Yi-shaped
  tokenizer directory in MIO's release layout (tests/yi_tokenizer.py), with random media codes.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines.tokenizers.text import SentencePieceTokenizer
from mio_jax.generate import chat as chat_lib
from mio_jax.generate import prompting
from mio_jax.tokens import chat_format
from mio_jax.tokens.layouts import Builder, Image, Speech
from mio_jax.tokens.vocab import Vocab
from tests.yi_tokenizer import load_hf_tokenizer, write_yi_tokenizer

# ---- MIO's code, transcribed (MIO-Team/MIO tokenization_mio.py) ---------------------------------
MIO_CHAT_TEMPLATE = {
  "format_system": "<|im_start|>system\n{system}<|im_end|>",
  "format_user": "<|im_start|>user\n{query}<|im_end|>",
  "format_assistant": "<|im_start|>assistant\n{response}<|im_end|>",
  "format_separator": "\n",
  "assistant_starter": "<|im_start|>assistant\n",
}
MIO_VOICE_MODE_SYSTEM = "You are MIO, an AI assistant capable of understanding images, text, videos, and speech, and generating speech. Please respond to the user with speech only, starting with <spch> and ending with </spch>."  # noqa: E501
MIO_STD_MODE_SYSTEM = "You are MIO, an AI assistant capable of understanding and generating images, text, videos, and speech, selecting the appropriate modality according to the context."  # noqa: E501
BOS = "<s>"


def mio_conversation(conversation, mode, add_generation_prompt=True):
  t = MIO_CHAT_TEMPLATE
  system = {"std": MIO_STD_MODE_SYSTEM, "voice": MIO_VOICE_MODE_SYSTEM}.get(mode)
  if mode == "custom":
    system = conversation[0]["content"]
  s = t["format_system"].format(system=system) + t["format_separator"]
  for turn in conversation:
    if turn["role"] == "user":
      s += t["format_user"].format(query=turn["content"]) + t["format_separator"]
    elif turn["role"] == "assistant":
      s += t["format_assistant"].format(response=turn["content"]) + t["format_separator"]
  return s + t["assistant_starter"] if add_generation_prompt else s[: -len(t["format_separator"])]


def mio_sequence(text, image_strs=(), speech_strs=()):
  for j, image_str in enumerate(image_strs):
    text = text.replace(f"<image_placeholder_{j}>", image_str)
  for j, speech_str in enumerate(speech_strs):
    text = text.replace(f"<speech_placeholder_{j}>", speech_str)
  return text if text.startswith(BOS) else BOS + text


def mio_image(ids):
  return "<image>" + "".join([f"<img{i}>" for i in ids]) + "</image>"


def mio_speech(codes, add_timbre):
  content = [f"<spch{int(t)}>" for t in codes[0]]
  if not add_timbre:
    return "<spch>" + "".join(content) + "</spch>"
  timbre = ["".join(f"<spch{int(t) + 1024 * k}>" for t in codes[k]) for k in (1, 2, 3)]
  return "<spch>" + "".join(content) + "".join(timbre) + "</spch>"


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yi_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("yi")
  write_yi_tokenizer(path)
  return path


@pytest.fixture(scope="module")
def hf_tokenizer(yi_dir):
  return load_hf_tokenizer(yi_dir)


@pytest.fixture(scope="module")
def builder(yi_dir):
  return Builder(Vocab.mio(), SentencePieceTokenizer(str(yi_dir / "tokenizer.model")))


RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 8192, 32)
VIDEO = RNG.integers(0, 8192, (3, 32))
SPEECH = RNG.integers(0, 1024, (4, 9))
TTS_TEXT = (
  "Mister Morton replied that far from making any claim upon his good opinion his only wish and "
  "the sole purpose of his visit was to find out the means of deserving it"
)
M = prompting.Media
frames = lambda: "".join(f"<image_placeholder_{j}>" for j in range(len(VIDEO)))
video_strs = lambda: [mio_image(f) for f in VIDEO]

# (name, our string builder, MIO's text, image strings, speech strings): infer.py's base prompts.
BASE = [
  (
    "text",
    lambda b: prompting.pretrain_string(b, "text", M(), "Question: 1+1=? Answer:"),
    "Question: 1+1=? Answer:",
    [],
    [],
  ),
  (
    "image captioning",
    lambda b: prompting.pretrain_string(b, "caption", M(image=IMAGE)),
    "<image_placeholder_0> The caption of this image is",
    [mio_image(IMAGE)],
    [],
  ),
  (
    "image generation",
    lambda b: prompting.pretrain_string(b, "draw", M(), "a beautiful sunset over the ocean"),
    "Please generate an image of ``a beautiful sunset over the ocean''",
    [],
    [],
  ),
  (
    "asr",
    lambda b: prompting.pretrain_string(b, "asr", M(speech=SPEECH)),
    "<speech_placeholder_0> The transcription of this speech is",
    [],
    [mio_speech(SPEECH, False)],
  ),
  (
    "tts",
    lambda b: prompting.pretrain_string(b, "tts", M(), TTS_TEXT),
    f"Please generate a speech of ``{TTS_TEXT}'': <spch>",
    [],
    [],
  ),
  (
    "video captioning",
    lambda b: prompting.pretrain_string(b, "video_caption", M(video=VIDEO)),
    "Please describe the following video: " + frames(),
    video_strs(),
    [],
  ),
  (
    "video generation",
    lambda b: prompting.pretrain_string(
      b, "draw_video", M(), "Bird eye panoramic view of busiest Asian cargo port"
    ),
    "Please generate a video for ``Bird eye panoramic view of busiest Asian cargo port'': <image>",
    [],
    [],
  ),
  (
    "video generation, free-form",
    lambda b: prompting.pretrain_string(
      b, "text", M(), 'Please generate a video frame by frame. The video is titled "A Wedding."'
    ),
    'Please generate a video frame by frame. The video is titled "A Wedding."',
    [],
    [],
  ),
]

TTS_INSTRUCT = (
  f"The transcription is ``{TTS_TEXT}''. Please generate a speech according to the given "
  "transcription. Start with <spch>."
)
# (name, our string builder, MIO's conversation, mode, image strings, speech strings).
INSTRUCT = [
  (
    "text",
    lambda b: prompting.chat_task_string(b, "text", M(), "What's the capital of France?"),
    [{"role": "user", "content": "What's the capital of France?"}],
    "std",
    [],
    [],
  ),
  (
    "image captioning",
    lambda b: prompting.chat_task_string(b, "caption", M(image=IMAGE)),
    [
      {
        "role": "user",
        "content": "Please provide an accurate and detailed description of this image.\n"
        "<image_placeholder_0>",
      }
    ],
    "std",
    [mio_image(IMAGE)],
    [],
  ),
  (
    "image understanding",
    lambda b: prompting.chat_task_string(
      b, "caption", M(image=IMAGE), "What colour of clothes is the man wearing?"
    ),
    [
      {
        "role": "user",
        "content": "What colour of clothes is the man wearing?\n<image_placeholder_0>",
      }
    ],
    "std",
    [mio_image(IMAGE)],
    [],
  ),
  (
    "image generation",
    lambda b: prompting.chat_task_string(b, "draw", M(), "A beautiful sunset over the ocean."),
    [
      {
        "role": "user",
        "content": "Please generate an image according to the caption.\n"
        "A beautiful sunset over the ocean.",
      }
    ],
    "std",
    [],
    [],
  ),
  (
    "asr",
    lambda b: prompting.chat_task_string(b, "asr", M(speech=SPEECH)),
    [{"role": "user", "content": "Please transcribe this speech.\n<speech_placeholder_0>"}],
    "std",
    [],
    [mio_speech(SPEECH, False)],
  ),
  (
    "speech understanding",
    lambda b: prompting.chat_task_string(
      b, "text", M(speech=SPEECH), "<speech_placeholder_0>\nPlease continue the story."
    ),
    [{"role": "user", "content": "<speech_placeholder_0>\nPlease continue the story."}],
    "std",
    [],
    [mio_speech(SPEECH, False)],
  ),
  (
    "tts",
    lambda b: prompting.chat_task_string(b, "tts", M(), TTS_TEXT),
    [{"role": "user", "content": TTS_INSTRUCT}],
    "voice",
    [],
    [],
  ),
  (
    "speech generation",
    lambda b: prompting.chat_task_string(b, "text", M(), "What abilities do you have?", "voice"),
    [{"role": "user", "content": "What abilities do you have?"}],
    "voice",
    [],
    [],
  ),
  (
    "speech to speech",
    lambda b: prompting.chat_task_string(b, "s2s", M(speech=SPEECH)),
    [{"role": "user", "content": "<speech_placeholder_0>"}],
    "voice",
    [],
    [mio_speech(SPEECH, False)],
  ),
  (
    "video understanding, question first",
    lambda b: prompting.chat_task_string(
      b, "video_caption", M(video=VIDEO), "What is this woman doing in this video?"
    ),
    [{"role": "user", "content": "What is this woman doing in this video?\n" + frames()}],
    "std",
    video_strs(),
    [],
  ),
  (
    "video understanding, frames first",
    lambda b: prompting.chat_task_string(
      b, "video_caption", M(video=VIDEO), frames() + "\nWhy are these dogs barking?"
    ),
    [{"role": "user", "content": frames() + "\nWhy are these dogs barking?"}],
    "std",
    video_strs(),
    [],
  ),
  (
    "video generation",
    lambda b: prompting.chat_task_string(
      b, "draw_video", M(), "rush hour traffic jam and gridlock in the city streets"
    ),
    [
      {
        "role": "user",
        "content": "Please generate a video for ``rush hour traffic jam and gridlock in the "
        "city streets''",
      }
    ],
    "std",
    [],
    [],
  ),
  (
    "interleaved",
    lambda b: prompting.chat_task_string(
      b,
      "text",
      M(),
      "How to make a cake? Please provide a step-by-step guide in the form of a visual story.",
    ),
    [
      {
        "role": "user",
        "content": "How to make a cake? Please provide a step-by-step guide in the form of a "
        "visual story.",
      }
    ],
    "std",
    [],
    [],
  ),
]


def _check(builder, hf_tokenizer, ours, want):
  assert ours == want
  ids = prompting.encode_string(builder, ours)
  assert ids.tolist() == hf_tokenizer(want)["input_ids"]


@pytest.mark.parametrize("case", BASE, ids=[c[0] for c in BASE])
def test_base_prompts_match_mio(builder, hf_tokenizer, case):
  _, ours, text, images, speeches = case
  _check(builder, hf_tokenizer, ours(builder), mio_sequence(text, images, speeches))


@pytest.mark.parametrize("case", INSTRUCT, ids=[c[0] for c in INSTRUCT])
def test_instruct_prompts_match_mio(builder, hf_tokenizer, case):
  _, ours, conversation, mode, images, speeches = case
  want = mio_sequence(mio_conversation(conversation, mode), images, speeches)
  _check(builder, hf_tokenizer, ours(builder), want)


def test_multi_turn_history_matches_mio(builder, hf_tokenizer):
  """MIO's own multi-turn example (tokenization_mio.py's __main__), plus a spoken reply: the
  assistant's speech carries its timbre layers (MIO's add_timbre=True)."""
  turns = [
    chat_lib.Turn("user", "What am I eating?"),
    chat_lib.Turn("assistant", "You are eating <image_placeholder_0>."),
    chat_lib.Turn("user", "What is the girl eating?"),
  ]
  media = [M(), M(image=IMAGE), M()]
  conversation = [{"role": t.role, "content": t.content} for t in turns]
  for mode in ("std", "voice"):
    want = mio_sequence(mio_conversation(conversation, mode), [mio_image(IMAGE)])
    _check(builder, hf_tokenizer, chat_lib.chat_string(builder, turns, media, mode=mode), want)

  spoken = [
    chat_lib.Turn("system", "You answer in speech."),
    chat_lib.Turn("user", "Say hello."),
    chat_lib.Turn("assistant", "<speech_placeholder_0>"),
    chat_lib.Turn("user", "Again."),
  ]
  conversation = [{"role": t.role, "content": t.content} for t in spoken]
  want = mio_sequence(mio_conversation(conversation, "custom"), [], [mio_speech(SPEECH, True)])
  ours = chat_lib.chat_string(builder, spoken, [M(), M(), M(speech=SPEECH), M()])
  _check(builder, hf_tokenizer, ours, want)


def test_sft_record_is_mio_string_without_generation_prompt(builder, hf_tokenizer):
  messages = [
    {"role": "user", "content": [Image(IMAGE), "What is this?"]},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "Say it."},
    {"role": "assistant", "content": [Speech(SPEECH)]},
  ]
  tokens, mask = builder.chat(messages)
  conversation = [
    {"role": "user", "content": mio_image(IMAGE) + "\nWhat is this?"},
    {"role": "assistant", "content": "A cat."},
    {"role": "user", "content": "Say it."},
    {"role": "assistant", "content": mio_speech(SPEECH, True)},
  ]
  want = mio_sequence(mio_conversation(conversation, "std", add_generation_prompt=False))
  assert tokens.tolist() == hf_tokenizer(want)["input_ids"]
  # Targets: each assistant's content and its <|im_end|>, nothing else (not the "\n" after it).
  pieces = hf_tokenizer.convert_ids_to_tokens(tokens.tolist())
  want_mask, on = np.zeros(len(tokens), np.uint8), False
  for i, p in enumerate(pieces):
    if on:
      want_mask[i] = 1
      on = p != "<|im_end|>"
    elif pieces[i - 2 : i + 1] == ["<|im_start|>", "assistant", "\n"]:
      on = True
  assert want_mask.sum() > 4 * SPEECH.shape[1]
  np.testing.assert_array_equal(mask, want_mask)
  assert mask[-1] == 1 and tokens[-1] == 7  # the record ends at MIO's last <|im_end|>


def test_encoder_matches_transformers_on_awkward_text(builder, hf_tokenizer):
  strings = [
    "Hello world",  # no <s>: transformers' Metaspace prepends one "▁" at the string start
    " Hello <image>  x",
    "<s>a  b   c\n\n d\t<|im_end|>\n<spch12></spch> after",
    "<s>Café 中文 emoji \U0001f600 <img8191><spch4095>",
  ]
  for s in strings:
    assert prompting.encode_string(builder, s).tolist() == hf_tokenizer(s)["input_ids"], s


def test_bad_placeholders_and_codes_are_errors(builder):
  with pytest.raises(chat_format.FormatError, match=r"<image_placeholder_1> has no media"):
    prompting.chat_task_string(builder, "text", M(image=IMAGE), "<image_placeholder_1> and?")
  with pytest.raises(chat_format.FormatError, match=r"<img8192>: image codes are <img0>"):
    prompting.encode_string(builder, "<s><img8192>")
  with pytest.raises(chat_format.FormatError, match="unknown system mode 'loud'"):
    chat_format.render_chat([{"role": "user", "content": "x"}], "loud")


# ---- decoding settings --------------------------------------------------------------------------
# infer.py's "Typically, the following generation_config performs the best" table, quoted:
# (num_beams, do_sample, repetition_penalty, top_p); temperature 1.0 and length_penalty 1.0 in all.
MIO_GENERATION = {
  "text": (5, False, 1.0, None),
  "image": (5, False, 1.15, 0.7),
  "tts": (1, True, 1.15, 0.7),
  "speech": (5, False, 2.0, 0.7),  # "speech generation (not tts)"
  "s2s": (5, False, 1.15, 0.7),
  "video": (1, True, 1.15, 0.7),
  "interleaved": (1, True, 1.15, 0.7),
}


def test_presets_are_mios_seven_generation_settings():
  from mio_jax.generate import presets

  assert sorted(presets.PRESETS) == sorted(MIO_GENERATION)
  for name, (beams, do_sample, penalty, top_p) in MIO_GENERATION.items():
    p = presets.get_preset(name)
    assert p.beam_size == beams and p.sampling.repetition_penalty == penalty, name
    assert (p.sampling.temperature == 1.0) if do_sample else (p.sampling.temperature == 0.0), name
    if do_sample:  # top-p only acts when MIO samples (generate ignores it under beam search)
      assert p.sampling.top_p == top_p and p.sampling.top_k == 0, name
    assert p.max_new_tokens == 512, name  # infer.py's max_new_tokens


def test_repetition_penalty_matches_transformers():
  """Same logits, same prompt + generated ids: transformers' RepetitionPenaltyLogitsProcessor
  (what MIO's `generate(repetition_penalty=...)` runs) against ours, both paths of `seen`."""
  import jax.numpy as jnp
  import torch
  from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

  from mio_jax.generate import sampling

  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 64)).astype(np.float32) * 3
  logits[:, :4] = [0.0, -1.5, 2.0, -0.0]
  prompt = np.asarray([[3, 1, 2, 9, 9, 0], [5, 5, 40, 1, 2, 63]])
  generated = np.asarray([[7, 1, 50], [2, 30, 30]])
  for penalty in (1.15, 2.0, 0.8):
    history = torch.tensor(np.concatenate([prompt, generated], axis=1))
    want = RepetitionPenaltyLogitsProcessor(penalty)(history, torch.tensor(logits)).numpy()
    seen = sampling.seen_in_prompt(jnp.asarray(prompt), jnp.ones(prompt.shape, jnp.int32), 64)
    for column in generated.T:
      seen = sampling.mark_seen(seen, jnp.asarray(column))
    ours = sampling.apply_repetition_penalty(jnp.asarray(logits), seen, jnp.full(2, penalty))
    np.testing.assert_allclose(np.asarray(ours), want, rtol=1e-6, atol=0)
    assert not np.allclose(want, logits)


# ---- the CLI on a demo checkpoint (the demo `mio_jax` layout and tokenizer) ---------------------
@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
  from tests.test_generate_cli import demo_corpus, write_checkpoint

  corpus = demo_corpus(tmp_path_factory)
  return write_checkpoint(tmp_path_factory.mktemp("ckpt"), corpus), corpus


def _print_prompt(workdir, tmp_path, *args):
  from tests.test_generate_cli import ROOT

  proc = subprocess.run(
    [sys.executable, "-m", "mio_jax.generate", f"--workdir={workdir}", f"--out={tmp_path}"]
    + ["--print_prompt", *args],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert len(lines) == 1, proc.stdout
  assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)  # nothing decoded or written
  return json.loads(lines[0])


def test_print_prompt_writes_mios_string_on_the_demo_tokenizer(demo_workdir, tmp_path):
  from mio_jax.generate import io
  from mio_jax.io.media import read_image

  workdir, corpus = demo_workdir
  model = io.load_model(str(workdir))
  png = str(next((corpus / "raw").rglob("*.png")))
  got = _print_prompt(workdir, tmp_path / "a", f"--image={png}", "--prompt=What is it?", "--chat")
  codes = model.tokenizers.image.encode(read_image(png))
  conversation = [
    {"role": "user", "content": "<image_placeholder_0>\nWhat is it?"}
  ]  # demo: media first
  assert got["prompt"] == mio_sequence(mio_conversation(conversation, "std"), [mio_image(codes)])
  v = model.vocab
  ids = np.asarray(got["ids"])
  assert ids[0] == model.builder.text.bos_id and ids[1] == v.special_id("<|im_start|>")
  start = int(np.flatnonzero(ids == v.special_id("<image>"))[0])
  np.testing.assert_array_equal(ids[start : start + codes.size + 2], v.image_span(codes))
  header = ids[np.flatnonzero(ids == v.special_id("<|im_start|>"))[-1] + 1 :]  # "assistant\n"
  assert header.size and (header < v.text_size).all()

  # A history opening with its own system turn: --mode=custom (and the default) keep it.
  history = tmp_path / "h.json"
  turns = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
  ]
  history.write_text(json.dumps(turns))
  got = _print_prompt(workdir, tmp_path / "b", f"--history={history}", "--prompt=Bye.")
  want = mio_conversation([*turns, {"role": "user", "content": "Bye."}], "custom")
  assert got["prompt"] == mio_sequence(want)
  got = _print_prompt(
    workdir, tmp_path / "c", f"--history={history}", "--prompt=Bye.", "--mode=voice"
  )
  want = mio_conversation([*turns, {"role": "user", "content": "Bye."}], "voice")
  assert got["prompt"] == mio_sequence(want)
  # A base (pretraining) prompt: MIO's wording after the image.
  got = _print_prompt(workdir, tmp_path / "d", f"--image={png}", "--nochat")
  assert got["prompt"] == mio_sequence(
    "<image_placeholder_0> The caption of this image is", [mio_image(codes)]
  )


def test_custom_mode_without_history_is_a_one_line_error(tmp_path):
  from tests.test_generate_cli import ROOT

  proc = subprocess.run(
    [sys.executable, "-m", "mio_jax.generate", f"--workdir={tmp_path}", f"--out={tmp_path}/o"]
    + ["--prompt=hi", "--mode=custom", "--print_prompt"],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "--mode=custom needs a --history whose first turn is the system prompt" in proc.stderr
