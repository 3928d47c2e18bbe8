"""Stage 4 (supervised fine-tuning): `--config=configs/stage4.py[:demo|:mio-7b]`.

Starts from stage 3's params: `--config.init_from=<stage 3 workdir>`. Mixture and length:
configs/curriculum.py.
"""

from configs import curriculum


def get_config(arg: str = "demo"):
  return curriculum.stage_config(4, arg)
