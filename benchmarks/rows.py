"""Each benchmark's summary rows, from its results by run key: (figure, ours, baseline, ratio,
target). `benchmarks/run.py` runs the processes and writes these into summary.md."""

from __future__ import annotations


def _ratio(a, b):
  return round(a / b, 3) if a and b else None


def _threads(run: dict) -> str:
  if run.get("one_core"):
    return "1 core"
  return f"{run['threads']} thr" if "threads" in run else "all thr"


def train_rows(r: dict) -> list:
  """Tokens/s (higher is better) at each side's default threads, the target's comparison, and
  with both sides pinned to one core; CPU seconds per step of the default runs (all threads;
  steadier than wall time on a shared host) and their peak RSS."""
  ours, base = r["ours"], r["torch"]
  target = {"S0": "≥ 1.25", "S1": "≥ 1.0"}.get(ours["shape"], "")
  rows = [
    (
      f"train {ours['shape']} tokens/s, default threads (ours {_threads(ours)}, "
      f"torch {_threads(base)})",
      ours["tokens_per_s"],
      base["tokens_per_s"],
      _ratio(ours["tokens_per_s"], base["tokens_per_s"]),
      target,
    )
  ]
  if "ours_t1" in r and "torch_t1" in r:
    rows.append(
      (
        f"train {ours['shape']} tokens/s, both on 1 core",
        r["ours_t1"]["tokens_per_s"],
        r["torch_t1"]["tokens_per_s"],
        _ratio(r["ours_t1"]["tokens_per_s"], r["torch_t1"]["tokens_per_s"]),
        "",
      )
    )
  if ours.get("step_cpu_s") and base.get("step_cpu_s"):
    rows.append(
      (
        f"train {ours['shape']} CPU s/step, default threads (lower is better)",
        ours["step_cpu_s"],
        base["step_cpu_s"],
        _ratio(ours["step_cpu_s"], base["step_cpu_s"]),
        "",
      )
    )
  rows.append(
    (
      f"train {ours['shape']} peak RSS MB, default threads (lower is better)",
      ours["peak_rss_mb"],
      base["peak_rss_mb"],
      _ratio(ours["peak_rss_mb"], base["peak_rss_mb"]),
      "≤ 1.0",
    )
  )
  return rows


def data_rows(r: dict) -> list:
  d = r["ours"]
  ref = d["reference_first_fit_64_bins"]
  return [
    (
      "data tokens/s (vs grain first-fit)",
      d["ours"]["tokens_per_s"],
      ref["tokens_per_s"],
      _ratio(d["ours"]["tokens_per_s"], ref["tokens_per_s"]),
      "",
    ),
    (
      "data non-pad fraction",
      d["ours"]["non_pad_fraction"],
      ref["non_pad_fraction"],
      _ratio(d["ours"]["non_pad_fraction"], ref["non_pad_fraction"]),
      "",
    ),
  ]


def checkpoint_rows(r: dict) -> list:
  c, w = r["ours"], r["ours_writer_core"]
  return [
    (
      "ckpt train step s, async save in flight (vs none), step on its own core",
      w["step_during_save_s"],
      w["step_s"],
      w["step_slowdown"],
      "≤ 1.1",
    ),
    (
      "ckpt train step s, async save in flight (vs none), step and writer share 2 cores",
      c["step_during_save_s"],
      c["step_s"],
      c["step_slowdown"],
      "",
    ),
    (
      "ckpt training time lost per save s (async vs blocking save)",
      c["train_time_lost_per_save_s"],
      c["save_total_s"],
      _ratio(c["train_time_lost_per_save_s"], c["save_total_s"]),
      "",
    ),
    (f"ckpt save MB/s ({c['state_mb']:.0f} MB state)", c["save_mb_per_s"], None, None, ""),
    ("ckpt restore MB/s (hot page cache)", c["restore_mb_per_s"], None, None, ""),
  ]


def compile_rows(r: dict) -> list:
  c = r["ours"]
  many = [k for k in c if k.startswith("scan_") and k != "scan_2_layers_s"]
  rows = [
    (
      f"compile s, scan {many[0].split('_')[1]} layers (vs 2)",
      c[many[0]],
      c.get("scan_2_layers_s"),
      c["ratio"],
      "≤ 1.5",
    )
  ]
  unrolled = [k for k in c if k.startswith("unrolled_")]
  if unrolled:
    rows.append(
      (
        "compile s, unrolled (vs scan 2)",
        c[unrolled[0]],
        c["scan_2_layers_s"],
        c["unrolled_ratio"],
        "",
      )
    )
  return rows


def decode_rows(r: dict) -> list:
  d = r["ours"]
  return [
    (
      f"decode {d['model']} {k} tokens/s (vs HF generate)",
      v["ours_tokens_per_s"],
      v["hf_tokens_per_s"],
      v["ratio"],
      "≥ 2" if k == "batch8" else "",  # issue #18's target
    )
    for k, v in d.items()
    if k.startswith(("batch", "beam"))
  ]


def tokenize_rows(r: dict) -> list:
  """Offline tokenization (converter + tokenizers + shards): Beam DirectRunner with 2 workers
  (net of its fixed start-up) against one process."""
  t = r["ours"]
  return [
    (
      f"tokenize {unit.replace('_per_s', '').replace('_', ' ')}/s, Beam 2 workers net of "
      f"{t['beam_direct_2_startup_s']} s start-up (vs 1 process)",
      t.get(f"beam_direct_2_net_{unit}"),
      t[f"local_{unit}"],
      _ratio(t.get(f"beam_direct_2_net_{unit}"), t[f"local_{unit}"]),
      "",
    )
    for unit in ("images_per_s", "speech_s_per_s", "video_frames_per_s")
  ]
