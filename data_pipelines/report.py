"""Counting processed and skipped inputs; `strict` turns the first skip into an error.

report = Report(strict=False)
try: records = tokenize_raw(...)
except BadExample as e: report.skip(e)      # prints the message naming the input; counts reason
else: report.ok(records)
print(report.summary())                     # processed / skipped by reason
"""

from __future__ import annotations

import collections
import sys

from mio_jax.tokens.layouts import BadExample


class Report:
  def __init__(self, strict: bool = False, stream=sys.stderr, max_messages: int = 20):
    self.strict, self.stream, self.max_messages = strict, stream, max_messages
    self.processed = 0
    self.records = collections.Counter()  # per data type
    self.skipped = collections.Counter()  # per reason
    self.notes = collections.Counter()  # accepted after a fix-up, e.g. "resampled_audio"
    self.messages: list[str] = []

  def ok(self, records, notes=()) -> None:
    self.processed += 1
    for data_type, *_ in records:
      self.records[data_type] += 1
    self.notes.update(set(notes))  # per input: an input resampled twice counts once

  def skip(self, error: BadExample) -> None:
    if self.strict:
      raise error  # --strict: the message already names the input
    self.skipped[error.reason] += 1
    self.messages.append(f"skipped ({error.reason}): {error}")
    if len(self.messages) <= self.max_messages:
      print(self.messages[-1], file=self.stream)

  def merge(self, processed: int, records: dict, skipped: dict, messages=(), notes=None) -> None:
    """Adds counts gathered elsewhere (e.g. by Beam workers)."""
    self.processed += processed
    self.records.update(records)
    self.notes.update(notes or {})
    self.skipped.update(skipped)
    self.messages.extend(messages)

  def as_dict(self) -> dict:
    return {
      "processed": self.processed,
      "records": dict(sorted(self.records.items())),
      "skipped": dict(sorted(self.skipped.items())),
      "skipped_total": sum(self.skipped.values()),
      "notes": dict(sorted(self.notes.items())),
    }

  def summary(self) -> str:
    lines = [
      f"processed {self.processed} inputs -> {sum(self.records.values())} records "
      + (" ".join(f"{k}={v}" for k, v in sorted(self.records.items())) or "")
    ]
    if self.notes:
      lines.append("accepted with " + " ".join(f"{k}={v}" for k, v in sorted(self.notes.items())))
    total = sum(self.skipped.values())
    lines.append(
      f"skipped {total}"
      + "".join(f"\n  {reason}: {n}" for reason, n in sorted(self.skipped.items()))
    )
    if len(self.messages) > self.max_messages:
      lines.append(f"  ({len(self.messages) - self.max_messages} more skip messages not printed)")
    return "\n".join(lines)
