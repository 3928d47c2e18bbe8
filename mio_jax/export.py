"""Export a trained run as a Hugging Face Llama checkpoint.

    python -m mio_jax.export --workdir=DIR --out=HF_DIR [--step=N] [--dtype=bfloat16|float32]

Writes config.json + model*.safetensors (loadable by `transformers.AutoModelForCausalLM`) and
`mio_vocab.json`, the unified vocab layout the token ids follow. `--out` may be a gs:// URL.
"""

from __future__ import annotations

from absl import flags

from mio_jax import hf, paths, trained

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.", required=True)
flags.DEFINE_string("out", None, "Output directory for the HF checkpoint.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step to export; default the newest readable one.")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Dtype of the exported weights.")


def export(workdir: str, out: str, step: int | None = None, dtype: str = "bfloat16") -> trained.Trained:
  paths.check_writable(out)  # a bad --out fails before the (slow) restore
  run = trained.load_trained(workdir, step)
  hf.save_hf(run.model_cfg, run.params, out, dtype=dtype, vocab=run.vocab)
  return run


def main(argv):
  del argv
  run = export(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.dtype)
  print(f"exported step {run.step} of {run.step_dir} ({run.model_cfg.num_params():,} params, "
        f"{FLAGS.dtype}) to {FLAGS.out}")


def cli():
  """Console-script entry point (pyproject.toml); same flags as `python -m`."""
  from mio_jax import entry
  entry.run(main)


if __name__ == "__main__":
  cli()
