"""Export a trained run as a Hugging Face Llama checkpoint.

    python -m mio_jax.export --workdir=DIR --out=HF_DIR [--step=N] [--dtype=bfloat16|float32]

Writes config.json + model*.safetensors (loadable by `transformers.AutoModelForCausalLM`) and
`mio_vocab.json`, the unified vocab layout the token ids follow. `--out` may be a gs:// URL.
A run in MIO's released layout is written back as MIO's release: 76,294 rows, MIO's config keys,
and the tokenizer files of `--tokenizer_from` (default: the run's `init_from`, when that is an HF
directory with a tokenizer), checked against the layout and copied unchanged.
"""

from __future__ import annotations

from absl import flags

from mio_jax.checkpoint import trained
from mio_jax.cli import entry
from mio_jax.hf import release_vocab as hf_vocab
from mio_jax.hf import weights as hf
from mio_jax.io import paths

FLAGS = flags.FLAGS


def export(
  workdir: str,
  out: str,
  step: int | None = None,
  dtype: str = "bfloat16",
  tokenizer_from: str | None = None,
) -> trained.Trained:
  paths.check_writable(out)  # a bad --out fails before the (slow) restore
  run = trained.load_trained(workdir, step)
  if run.vocab.layout_name != "mio":
    if tokenizer_from:
      raise ValueError(
        f"--tokenizer_from applies to the mio vocab layout; {workdir} uses "
        f"{run.vocab.layout_name!r}"
      )
  elif tokenizer_from is None:
    source = run.config.get("init_from") or ""
    tokenizer_from = source if source and hf_vocab.tokenizer_files(source) else None
  hf.save_hf(
    run.model_cfg, run.params, out, dtype=dtype, vocab=run.vocab, tokenizer_from=tokenizer_from
  )
  return run


def main(argv):
  del argv
  run = export(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.dtype, FLAGS.tokenizer_from)
  print(
    f"exported step {run.step} of {run.step_dir} ({run.model_cfg.num_params():,} params, "
    f"{FLAGS.dtype}) to {FLAGS.out}"
  )


def define_flags() -> None:
  """The command line's flags: defined by `cli()` only, so importing this module as a library
  (tests, notebooks) registers no absl flags that could clash with another CLI's."""
  flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.", required=True)
  flags.DEFINE_string("out", None, "Output directory for the HF checkpoint.", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step to export; default the newest readable one.")
  flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Dtype of the exported weights.")
  flags.DEFINE_string(
    "tokenizer_from",
    None,
    "mio layout only: HF dir whose tokenizer files to "
    "copy; default the run's init_from when it has them.",
  )


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  define_flags()
  entry.run(main)
