"""Stage 2 (interleaved): `--config=configs/stage2.py[:demo|:mio-7b]`.

Starts from stage 1's params: `--config.init_from=<stage 1 workdir>`. Mixture and length:
configs/curriculum.py.
"""

from configs import curriculum


def get_config(arg: str = "demo"):
  return curriculum.stage_config(2, arg)
