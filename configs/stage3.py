"""Stage 3 (speech-enhanced): `--config=configs/stage3.py[:demo|:mio-7b]`.

Starts from stage 2's params: `--config.init_from=<stage 2 workdir>`. Mixture and length:
configs/curriculum.py.
"""

from configs import curriculum


def get_config(arg: str = "demo"):
  return curriculum.stage_config(3, arg)
