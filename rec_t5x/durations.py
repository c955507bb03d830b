"""Human-readable durations for console lines and reports (no heavy imports: used by the trainer's
progress line and by the experiment report alike)."""
import math


def format_duration(seconds: float | None) -> str:
  """'1h02m03s', '4m05s' or '6s' (rounded to whole seconds).

  Returns '?' when the duration is unknown: None, negative or not finite.
  """
  if seconds is None or not math.isfinite(seconds) or seconds < 0:
    return "?"
  s = int(round(seconds))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m{sec:02d}s"
  return f"{m}m{sec:02d}s" if m else f"{sec}s"
