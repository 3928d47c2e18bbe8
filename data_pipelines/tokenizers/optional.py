"""Lazy imports of optional heavy dependencies, failing with the pip line that fixes them."""

from __future__ import annotations

import importlib


def require(module: str, pip: str, why: str):
  """Imports `module` or raises ImportError naming the package to install."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"{why} needs `{module}`: pip install {pip}  ({e})") from e


def torch_no_grad():
  torch = require("torch", "torch", "pretrained tokenizer adapters")
  return torch.inference_mode()
