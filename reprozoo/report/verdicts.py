"""The verdict rules: a reproduced number against the reported one (the methodology's 5% tolerance),
and the summary DVC shows as metrics."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from reprozoo.stats import Interval


TOLERANCE_PCT = 5.0  # the methodology's threshold: a metric more than 5% (relative) off deviates


def deviation(reproduced: float, reported: float | None) -> tuple[float | None, float | None, str]:
    """Difference in points, in percent of the reported value, and the flag."""
    if reported is None:
        return None, None, "no reported value"
    points = reproduced - reported
    percent = 100 * points / reported if reported else float("inf")
    return points, percent, ("DEVIATES" if abs(percent) > TOLERANCE_PCT else "ok")


def verdict(reproduced: float, reported: float | None, not_comparable: str | None = None,
            stuck: str | None = None, interval: Interval | None = None) -> str:
    """no progress (why: the run is no result) / reproduced (within tolerance) / deviates
    (flagged) / inconclusive (our 95% interval is wider than the tolerance: it cannot tell the
    two apart) / not comparable (why)."""
    if stuck:
        return f"NO PROGRESS ({stuck})"
    if reported is None:
        return "not comparable (no reported value)"
    if not_comparable:
        return f"not comparable ({not_comparable})"
    if interval is not None and interval.half_width is not None and reported:
        relative = 100 * interval.half_width / abs(reported)
        if relative > TOLERANCE_PCT:
            return f"inconclusive (95% interval ±{relative:.1f}% of the reported value, wider than {TOLERANCE_PCT:g}%)"
    return "reproduced" if deviation(reproduced, reported)[2] == "ok" else "DEVIATES"


def summarise(verdicts: pd.DataFrame, table: pd.DataFrame) -> dict:
    """summary.json: per verdict on test accuracy, how many models got it; their mean accuracy."""
    accuracy = verdicts.loc[verdicts["metric"] == "accuracy", "verdict"].astype(str)
    # Six short keys: `dvc metrics show` prints them as one row of columns, within 120.
    return {"models": len(accuracy), "reproduced": int((accuracy == "reproduced").sum()),
            "deviates": int(accuracy.str.startswith(("DEVIATES", "NO PROGRESS")).sum()),  # off by > 5%, or junk
            "inconclusive": int(accuracy.str.startswith("inconclusive").sum()),
            "not_comparable": int(accuracy.str.startswith("not comparable").sum()),
            "accuracy": round(float(pd.to_numeric(table["accuracy"], errors="coerce").mean()), 2)}


def parse_duration(text: str | None) -> float | None:
    """'2m51s' / '265m' / '1h2m3s' -> seconds."""
    if not text:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts:
        return None
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in parts)
