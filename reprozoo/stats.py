"""How sure a reproduced number is: 95% intervals and paired tests on the test images.

- `interval`: a metric's 95% interval. Two sources of uncertainty, combined in quadrature:
  the test images (a bootstrap over them: scipy.stats.bootstrap, seeded) and, with several
  seeds, the training run itself (the standard deviation over seeds). The interval says
  where one run of this pipeline lands, which is what a single reported number is:
      se = sqrt(se_images^2 + sd_seeds^2),   interval = mean +/- 1.96 se
  se_images is one run's bootstrap standard error (the root mean square over seeds);
  sd_seeds is the sample standard deviation of the seeds' values (ddof 1). With one seed
  and no per-image data there is no interval.
- `compare`: two models on the same test images, seed by seed: the accuracy difference with
  a paired-bootstrap 95% interval and McNemar's exact test on the discordant images
  (pooled over seeds).

Every bootstrap draws from a numpy Generator seeded with the run's seed: same inputs, same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))  # 1.959964
RESAMPLES = 2000                    # bootstrap resamples per interval
BATCH = 100                         # resamples held in memory at once (10,000 images: 8 MB)


@dataclass(frozen=True)
class Interval:
    mean: float                # over seeds
    se_images: float | None    # bootstrap standard error of one run over the test images
    sd_seeds: float | None     # standard deviation over seeds (None with one seed)
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    @property
    def source(self) -> str:
        """What the interval covers, for a table cell."""
        parts = [p for p, v in (("test images", self.se_images), ("seeds", self.sd_seeds)) if v is not None]
        return " + ".join(parts) or "none"

    def contains(self, value: float | None) -> bool | None:
        return None if value is None or self.low is None else bool(self.low <= value <= self.high)


def combine(mean: float, se_images: float | None, seed_values) -> Interval:
    """The interval from its two parts (see the module's docstring); what `interval` returns."""
    values = np.asarray(seed_values, dtype=float)
    sd = float(values.std(ddof=1)) if len(values) > 1 else None
    parts = [v for v in (se_images, sd) if v is not None]
    if not parts:
        return Interval(mean, None, None, None, None)
    half = Z95 * float(np.sqrt(sum(v * v for v in parts)))
    return Interval(mean, se_images, sd, mean - half, mean + half)


def bootstrap_se(per_image: np.ndarray, rng: np.random.Generator, scale: float = 1.0) -> float:
    """The bootstrap standard error of the mean of `per_image` (one value per test image), times `scale`."""
    result = stats.bootstrap((np.asarray(per_image, dtype=float),), np.mean, n_resamples=RESAMPLES, batch=BATCH,
                             method="percentile", rng=rng)
    return float(result.standard_error) * scale


def interval(seed_values, per_image_runs=(), seed: int = 0, scale: float = 1.0) -> Interval:
    """A metric's 95% interval. `seed_values`: the metric of each seed's run (metrics.json);
    `per_image_runs`: for each seed, the metric per test image (1/0 correct for accuracy,
    the loss for loss), empty when unknown; `scale`: per-image mean -> the metric's unit (100: %)."""
    values = np.asarray(seed_values, dtype=float)
    rng = np.random.default_rng(seed)
    ses = [bootstrap_se(v, rng, scale) for v in per_image_runs]
    se_images = float(np.sqrt(np.mean(np.square(ses)))) if ses else None
    return combine(float(values.mean()), se_images, values)


@dataclass(frozen=True)
class Comparison:
    diff: float             # accuracy of a minus b, points, mean over seeds
    low: float              # paired-bootstrap 95% interval of diff
    high: float
    p_value: float          # McNemar's exact test, two-sided
    a_only: int             # images a gets right and b wrong (pooled over seeds)
    b_only: int
    seed_diffs: tuple[float, ...]


def mcnemar(a_only: int, b_only: int) -> float:
    """McNemar's exact test: under 'equally accurate', each discordant image is a fair coin."""
    n = a_only + b_only
    return 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5).pvalue)


def compare(correct_a, correct_b, seed: int = 0) -> Comparison:
    """Two models on the same test images. `correct_a`, `correct_b`: per seed, a boolean per
    image (right or wrong); the seeds are paired in order."""
    a = [np.asarray(x, dtype=float) for x in correct_a]
    b = [np.asarray(x, dtype=float) for x in correct_b]
    n = min(len(a), len(b))
    diffs = [100 * (x - y) for x, y in zip(a[:n], b[:n])]  # per seed, per image: +100, 0 or -100

    def mean_diff(*runs, axis=-1):
        return np.mean([r.mean(axis=axis) for r in runs], axis=0)

    boot = stats.bootstrap(tuple(diffs), mean_diff, paired=True, n_resamples=RESAMPLES, batch=BATCH,
                           method="percentile", rng=np.random.default_rng(seed))
    a_only = int(sum(((x == 1) & (y == 0)).sum() for x, y in zip(a[:n], b[:n])))
    b_only = int(sum(((x == 0) & (y == 1)).sum() for x, y in zip(a[:n], b[:n])))
    low, high = boot.confidence_interval
    return Comparison(float(mean_diff(*diffs)), float(low), float(high), mcnemar(a_only, b_only), a_only, b_only,
                      tuple(float(d.mean()) for d in diffs))
