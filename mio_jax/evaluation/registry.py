"""Data-set specific scorers plug in here. The core tasks (tasks.py) score what needs no knowledge
of the data (WER, exact match, CIDEr, completion) and ask this registry for the rest: scores of a
prediction against an example's `attributes` (the manifest's structured ground truth, e.g. the
shapes-world objects of the demo corpus).

    image_captioning, video_captioning   prediction = the caption text
    text_to_image                        prediction = read(decoded image), e.g. detected objects

`python -m mio_jax.evaluate --plugins=MODULE,..` imports each module by name (importlib); the
module calls `register`. The default, `data_pipelines.demo_eval` (the demo corpus's scorers), is
skipped when it is not installed: the core never imports data_pipelines statically.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

DEFAULT_PLUGINS = ("data_pipelines.demo_eval",)


@dataclasses.dataclass(frozen=True)
class Scorer:
  keys: tuple[str, ...]  # the metric names `counts` reports, in result order
  counts: Callable  # (prediction, attributes) -> {name: (num, den)}
  read: Callable = lambda x: x  # raw prediction (text, decoded image) -> what counts takes
  describe: Callable = str  # read(prediction) -> a sample's "prediction" in the results


SCORERS: dict[str, Scorer] = {}


def register(task: str, scorer: Scorer) -> None:
  SCORERS[task] = scorer


def scorer(task: str) -> Scorer | None:
  return SCORERS.get(task)


def import_plugins(names=None) -> list[str]:
  """Imports the plugin modules (None: DEFAULT_PLUGINS); returns those imported. A default plugin
  whose package is not installed is skipped; a module named explicitly must import."""
  optional = names is None
  done = []
  for name in DEFAULT_PLUGINS if optional else names:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      if not (optional and e.name and name.startswith(e.name)):
        raise
      continue
    done.append(name)
  return done
