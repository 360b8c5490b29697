"""`train`: the full training set at the chosen lr and epochs, evaluated on the
test set after every epoch (as the study does), then weights + history + run record.

A run that diverges or makes no progress (its last epoch's test loss exploded or
its test accuracy is at chance, see `reprozoo.engine.check_progress`) fails the
job with one line and writes nothing."""
from __future__ import annotations

import logging
import time

import pandas as pd
import torch

from reprozoo.data import labelled_mask, model_inputs, read_split
from reprozoo.engine import Diverged, NoProgress, Runner, Tensors, check_progress, fit, seed_everything
from reprozoo.errors import UserError
from reprozoo.io import fmt_duration, save_torch, stamp, write_csv, write_json
from reprozoo.results import read_best
from reprozoo.models import count_parameters, create_model, setting_deviations

log = logging.getLogger("reprozoo.train")


class TrainError(UserError, RuntimeError):
    pass


def train(cfg: dict, data_path, split_path, best_path, weights_path, history_path, run_path, device,
          features_path=None, seed: int | None = None) -> dict:
    """Train at best.json's lr for its epochs; `seed` (default: the config's) is this run's (repeats)."""
    if seed is not None:
        cfg = {**cfg, "seed": seed}
    best = read_best(best_path)  # lr a finite number > 0, epochs an integer >= 1
    lr, epochs = float(best["lr"]), int(best["epochs"])
    arrays = model_inputs(cfg, data_path, features_path)
    split = read_split(split_path, len(arrays["y_train"]), len(arrays["y_test"]))
    labelled = None if cfg.get("labelled_per_class") is None else labelled_mask(
        arrays["y_train"], split["train"], cfg["labelled_per_class"], cfg["seed"], arrays["classes"])
    train_set = Tensors.from_numpy(arrays["x_train"], arrays["y_train"], device, split["train"], labelled)
    n_labelled = len(train_set) if labelled is None else int(labelled.sum())
    test_set = Tensors.from_numpy(arrays["x_test"], arrays["y_test"], device, split["test"])

    generator = seed_everything(cfg["seed"])
    model = create_model(cfg["arch"], len(arrays["classes"]), **cfg["args"])
    runner = Runner(model, cfg, device, lr)
    log.info("%s: %s params, lr %.3g, %d epochs, %d train (%d labelled) / %d test images, objective %s, on %s",
             cfg["name"], f"{count_parameters(model):,}", lr, epochs, len(train_set), n_labelled, len(test_set),
             runner.objective.name, device)

    start = time.perf_counter()

    def on_epoch(r: dict) -> None:
        eta = (time.perf_counter() - start) / r["epoch"] * (epochs - r["epoch"])   # at the mean epoch time so far
        log.info("epoch %d/%d train loss %.4f test loss %.4f test acc %.2f%% (%.1fs, ETA %s)", r["epoch"], epochs,
                 r["train_loss"], r["val_loss"], r["val_accuracy"], r["seconds"], fmt_duration(eta))

    try:
        history = fit(runner, train_set, test_set, epochs, generator, on_epoch=on_epoch)
        check_progress(history[-1], len(arrays["classes"]), test_set, "test")  # the epoch whose weights are kept
    except NoProgress as e:
        raise TrainError(f"model '{cfg['name']}' made no progress at lr {lr:.3g} in {epochs} epochs: {e}") from None
    except Diverged as e:
        raise TrainError(f"model '{cfg['name']}' diverged at lr {lr:.3g}: {e}") from None
    duration = time.perf_counter() - start

    frame = pd.DataFrame(history).rename(columns={"val_loss": "test_loss", "val_accuracy": "test_accuracy"})
    save_torch(weights_path, {k: v.detach().cpu().contiguous() for k, v in runner.model.state_dict().items()})
    write_csv(history_path, frame, index=False)
    run = {"model": cfg["name"], "arch": cfg["arch"], "params": count_parameters(model), "lr": lr,
           "epochs": epochs, "hparams": best["source"], "duration_s": round(duration, 3),
           "final_test_loss": history[-1]["val_loss"], "final_test_accuracy": history[-1]["val_accuracy"],
           "train_images": len(train_set), "labelled_images": n_labelled,
           "objective": runner.objective.name, "setting_deviations": setting_deviations(cfg), "config": cfg,
           **stamp(device, cfg["seed"])}
    write_json(run_path, run)
    return run
