"""Whether a run made progress: the two rules that tell a failed run from a result.
Pure numbers, no torch, so that the report (which flags such runs) starts without it;
`reprozoo.engine.check_progress` applies them to a finished run."""
from __future__ import annotations

import math

import numpy as np

# A run that makes no progress is a failure, not a result. It is judged once, after
# the epochs the run had, on the epoch whose numbers it reports (a tuning trial: its
# best epoch; a training run: its last), never epoch by epoch: a legitimate high lr
# can throw the loss far up for an epoch and recover (an mlp at a high lr on the demo's
# digits can score several times ln K after its first epoch and 95% a few later). Two rules:
#
# 1. Loss explosion. A uniform guess over K classes scores a cross-entropy of ln K,
#    and an untrained model scores about that (1 to 2 x ln K for every model here).
#    A loss above LOSS_BOUND_FACTOR x ln K means the model puts a (geometric) mean
#    probability below K^-10 on the true class: far worse than guessing, whatever its
#    accuracy. Factor 10 keeps clear of the spikes legitimate runs go through (up to
#    ~9 x ln K after one epoch at a high demo lr).
LOSS_BOUND_FACTOR = 10.0
# 2. Accuracy at chance. A model that ignores its input can do no better, in
#    expectation, than always answering the most common class of the evaluated set.
#    An accuracy not above that class's share (in images: no more right answers than
#    that class has) shows no sign of learning; it is where collapsed runs land (at an
#    absurd lr a model answers one class for every image and scores exactly that
#    class's share). No significance margin on top: on the small sets of a CPU demo a
#    3-sd binomial margin would flag slow but real learners (on 57 validation images
#    with a commonest class of 14%, 3 sd asks 27.8%, above where a random-init resnet18
#    can stand after 2 tuning epochs on its way to over 90%). The price: a model that guesses
#    at random, rather than always the same class, can land a few images above the
#    line and pass (the report still shows how far it is from the paper). With fewer than
#    MIN_IMAGES_PER_CLASS images per class the accuracy is too coarse to judge and
#    this rule is skipped.
MIN_IMAGES_PER_CLASS = 5


def no_progress(loss: float, accuracy: float, class_counts, split: str = "val") -> tuple[str, bool] | None:
    """(why, exploded) when a model with this mean loss and accuracy (%) on a `split`
    set with `class_counts` images per class made no progress, else None."""
    counts = np.asarray(class_counts)
    k, n = len(counts), int(counts.sum())
    loss_bound = LOSS_BOUND_FACTOR * math.log(k)
    if not loss <= loss_bound:
        return (f"{split} loss {loss:.3g} is above {LOSS_BOUND_FACTOR:g} x ln({k}) = {loss_bound:.3g} "
                f"(a uniform guess scores {math.log(k):.3g})"), True
    commonest = int(counts.max()) if n else 0
    if n >= MIN_IMAGES_PER_CLASS * k and round(accuracy * n / 100) <= commonest:
        return (f"{split} accuracy {accuracy:.2f}% is not above chance ({100 * commonest / n:.2f}%: always "
                f"answering the commonest class of the {n} images)"), False
    return None
