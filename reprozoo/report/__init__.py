"""`report`: every reproduced number beside the reported one, with a verdict (`build.report`, the stage).

Writes, for one dataset:
- comparison.csv: one row per model (mean over seeds), deviation in points and %;
- verdicts.csv: per model and metric, reproduced vs reported, its 95% interval and the verdict
  (reproduced within 5% / deviates / inconclusive: the interval is wider than the 5% /
  not comparable / no progress);
- claims.csv: each of the study's claims (config `study.claims`) checked on our runs with a
  paired test on the same test images (reprozoo/stats.py): supported / contradicted /
  inconclusive / not comparable / not testable;
- ablations.csv: each variant beside its base and, where reported, the paper;
- verification.csv: the module verifier's summary per model;
- summary.json: the study in six numbers (models; how many reproduced the reported accuracy,
  deviate from it (or made no progress), are inconclusive or not comparable; their mean test
  accuracy): DVC's metrics, few enough that `dvc metrics show` and `dvc exp show` fit a terminal;
- comparison.md: all of the above plus the paper spec, for people;
- figures: training curves (all seeds, with the test accuracy's 95% band), confusion
  matrices, the accuracy chart (95% intervals; each ablation hatched beside its base model;
  the study's CIFAR-10 bars only beside CIFAR-10 runs); each as PNG and as a PDF twin for papers
  (`reprozoo.io.save_figure`, through which the attention and samples stages write theirs too).

A model whose test numbers show no progress on any seed (loss exploded, or
accuracy at chance: `reprozoo.progress.no_progress`, the rule the train stage
enforces) is flagged NO PROGRESS: its accuracy and loss are never a verdict.

Modules, each importing only those listed before it: `verdicts` (the verdict rules), `markdown`
(comparison.md and the terminal's compact table: no plotting library, no scipy, for `python -m
reprozoo table`), `runs` (every model's checked results over seeds: reprozoo/results.py), `tables`
(the CSV tables), `claims` (the study's claims, tested), `figures`, `build` (the stage). File names
come from the paths table (reprozoo/stages.py).
"""
