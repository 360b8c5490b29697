"""The study's claims (config `study.claims`) tested on our runs, and their section of comparison.md."""
from __future__ import annotations

import numpy as np
import pandas as pd

from reprozoo import stats
from reprozoo.report.markdown import md_table
from reprozoo.report.runs import Results

ALPHA = 0.05  # each claim's significance level, split over its pairs (Bonferroni)
LR_RATIO = 2.0  # default `min_ratio` of an lr claim: one tuning search cannot separate closer lrs


def _models_of(claim: dict) -> list[str]:
    return list(dict.fromkeys([*claim.get("above", []), *claim.get("below", []), *claim.get("models", [])]))


def _not_comparable(dataset: dict, res: Results, claim: dict, stuck: dict, ablations: dict) -> list[str]:
    """Why the claim's models cannot speak for the study's (empty: they can). Short: the comparison
    table gives each model's setting in full."""
    models = _models_of(claim)
    ran = [m for m in models if m in res.metrics]
    missing = [m for m in models if m not in res.metrics]

    def own_setting(m):  # an ablation's own change is its point, not a departure from the paper
        own = set(ablations.get(m, {}).get("set", {}).get("args", {}))
        return [d for d in res.runs[m][0].get("setting_deviations", []) if d.split("=")[0] not in own]

    groups = [("did not run", missing), ("setting of", [m for m in ran if own_setting(m)]),
              ("no progress:", [m for m in ran if stuck.get(m)]),
              ("lr not tuned:", [m for m in ran if claim["check"] == "lr_above"
                                 and res.best[m].get("source") != "tuned"])]
    reasons = [f"{', '.join(ms)} did not run" if what == "did not run" else f"{what} {', '.join(ms)}"
               for what, ms in groups if ms]
    if not dataset["paper_dataset"]:
        reasons.insert(bool(missing), f"dataset {dataset['name']}")
    return reasons


def _correct(res: Results, name: str) -> list[np.ndarray]:
    return list(res.per_image[name]["accuracy"]) if name in res.per_image else []


def _pair_evidence(res: Results, a: str, b: str, seed: int) -> tuple[stats.Comparison | None, str]:
    ca, cb = _correct(res, a), _correct(res, b)
    if not ca or not cb:
        return None, f"{a} vs {b}: no predictions.csv"
    if {len(x) for x in ca + cb} != {len(ca[0])}:
        return None, f"{a} vs {b}: not the same test images"
    c = stats.compare(ca, cb, seed)
    return c, (f"{a} − {b}: {c.diff:+.2f} points [{c.low:+.2f}, {c.high:+.2f}], McNemar p = {c.p_value:.2g} "
               f"({c.a_only}/{c.b_only} images only one gets right)")


def _above(res: Results, claim: dict, seed: int) -> tuple[str, str]:
    pairs = [(a, b) for a in claim["above"] for b in claim["below"] if a != b]
    alpha, outcomes, evidence = ALPHA / len(pairs), [], []
    for a, b in pairs:
        c, text = _pair_evidence(res, a, b, seed)
        evidence.append(text)
        if c is None:
            outcomes.append("inconclusive")
        elif c.p_value < alpha and c.diff > 0 and all(d > 0 for d in c.seed_diffs):
            outcomes.append("supported")
        elif c.p_value < alpha and c.diff < 0 and all(d < 0 for d in c.seed_diffs):
            outcomes.append("contradicted")
        else:
            outcomes.append("inconclusive")
    found = ("contradicted" if "contradicted" in outcomes else
             "supported" if set(outcomes) == {"supported"} else "inconclusive")
    level = f"; level {alpha:.2g} per pair" if len(pairs) > 1 else ""
    return found, "; ".join(evidence) + level


def _similar(res: Results, claim: dict, seed: int) -> tuple[str, str]:
    a, b = claim["models"]
    margin = claim["margin"]
    c, text = _pair_evidence(res, a, b, seed)
    if c is None:
        return "inconclusive", text
    found = ("supported" if -margin <= c.low and c.high <= margin else
             "contradicted" if c.low > margin or c.high < -margin else "inconclusive")
    return found, f"{text}; similar = within ±{margin:g} points"


def _lr_above(res: Results, claim: dict) -> tuple[str, str]:
    ratio_needed, outcomes, evidence = claim.get("min_ratio", LR_RATIO), [], []
    for a in claim["above"]:
        for b in claim["below"]:
            ratio = res.best[a]["lr"] / res.best[b]["lr"]
            evidence.append(f"lr {a} / {b} = {ratio:.3g}")
            outcomes.append("supported" if ratio >= ratio_needed else
                            "contradicted" if ratio <= 1 / ratio_needed else "inconclusive")
    found = ("contradicted" if "contradicted" in outcomes else
             "supported" if set(outcomes) == {"supported"} else "inconclusive")
    return found, "; ".join(evidence) + f" (one tuning search each: a factor {ratio_needed:g} decides)"


def check_claims(dataset: dict, res: Results, claims: list[dict], stuck: dict | None = None,
                 ablations: dict | None = None) -> pd.DataFrame:
    """Each of the study's claims (config `study.claims`) against our runs: supported, contradicted,
    inconclusive (the paired test cannot tell), not comparable (a model did not run, or ran on
    another dataset or in another setting: never supported) or not testable (the claim's `why`).
    The evidence (differences, intervals, p-values) is shown wherever the runs allow, even when
    the verdict is not comparable."""
    rows = []
    for claim in claims:
        check, models = claim["check"], _models_of(claim)
        if check == "untestable":
            found, evidence = f"not testable ({claim['why']})", ""
        else:
            reasons = _not_comparable(dataset, res, claim, stuck or {}, ablations or {})
            ran = all(m in res.metrics for m in models)
            found, evidence = (("", "") if not ran else
                               _above(res, claim, res.seed) if check == "accuracy_above" else
                               _similar(res, claim, res.seed) if check == "accuracy_similar" else
                               _lr_above(res, claim))
            if reasons:
                found = f"not comparable ({'; '.join(reasons)})"
        rows.append({"claim": claim["id"], "says": claim["says"], "check": check, "models": ", ".join(models),
                     "verdict": found, "evidence": evidence, "where": claim.get("where", "")})
    return pd.DataFrame(rows, columns=["claim", "says", "check", "models", "verdict", "evidence", "where"])


def claims_md(claims: pd.DataFrame) -> list[str]:
    """The claims section: the testable claims' table, then the untestable ones with their reasons."""
    lines = ["## The study's claims", ""]
    if not len(claims):
        return lines + ["_none listed (config `study.claims`)_", ""]
    untestable = claims["check"] == "untestable"
    lines += ["Each claim of the study our runs can test, checked with a paired test on the same test images "
              "(accuracy: McNemar's exact test and a paired-bootstrap 95% interval of the difference, "
              f"level {ALPHA:g} split over a claim's pairs, the direction required on every seed; "
              "lr: the tuned lrs' ratio). `not comparable`: a model did not run, or ran on another dataset or "
              "in another setting; the evidence is then shown for information only.", ""]
    lines += [md_table(claims.loc[~untestable, ["claim", "says", "verdict", "evidence"]]), ""]
    if untestable.any():
        lines += ["What the study claims that our runs cannot test:", ""]
        lines += [f"- **{r.claim}**: {r.says}. Why not: {r.verdict[len('not testable ('):-1].rstrip('.')}."
                  for r in claims[untestable].itertuples()] + [""]
    return lines
