"""Stage 1 (alignment): `--config=configs/stage1.py[:demo|:mio-7b]`.

demo    the tiny model on the built-in demo corpus (built on first use into ./demo_data);
        a few minutes on a laptop CPU.
mio-7b  MIO paper settings (docs/architecture.md §7): Yi-6B dims, seq 2800, batch 256, peak LR 3e-5,
        warmup 3 %, clip 1.0, 24,800 steps, FSDP over all devices, image-text : text :
        speech-text = 12 : 2 : 2. Start from Yi-6B with `--config.init_from=<HF dir>`.
Mixtures and lengths of all four stages: configs/curriculum.py.
"""

from configs import curriculum


def get_config(arg: str = "demo"):
  return curriculum.stage_config(1, arg)
