"""Benchmark closed-form unlearning: time over retraining and restored fraction, both orders, on a
CIFAR-10 subset with label poisoning; and the convex case's distance to retraining. One run.

    python benchmarks/bench_unlearn.py [--data-dir ../shared/data] [--train 5000] [--epochs 15]
                                       [--model cnn|vgg] [--out PATH]

(``--data-dir`` holds cifar10/cifar10.npz.)

The CIFAR-10 part (skipped when the data is not found) trains the project's CNN (``--model vgg``: the
published VGG-style network) on ``--train`` images with 20% of the labels flipped between class pairs
(theta*), and the same model on the true labels
(retraining, the clean model: same initialisation and data order). It then applies, to the same theta*,
first-order updates and second-order updates over a grid of (last layers, curvature, damping, steps,
Hessian sample),
and one epoch of fine-tuning. Every variant is scored on a validation split and on the evaluation split
(5,000 images each, both outside the training set): pick a setting by its validation score, report its
evaluation score.

Where an update of the last layer that fits the corrected labels ends up: that layer refitted to
convergence on them with the layers below frozen (multinomial logistic regression on theta*'s
features, L2 over a grid), and the same refit on the clean model's features (which should restore about all of
the loss: the check that the refit itself is sound).
The project's method ``refit`` (``influence_unlearn``'s, through the trial's own code): the last layer
retrained by Newton's method with a kernel L2 penalty per training example, each strength of a grid alone
and then all of them with the choice on the validation split (the row to read; its time covers every fit).
Time ratios are each method's wall time over retraining's, measured in the same process one after the
other (absolute seconds on a shared machine are noise).

The convex part: L2 logistic regression on the built-in digits (3 against the rest), label flips of
growing budget, relative parameter distance to retraining for one and two second-order steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

GRID = [  # (last_layers, curvature, damping per example, steps, Hessian sample)
    (1, "hessian", 0.01, 1, None),
    (1, "hessian", 0.003, 3, None),
    (1, "hessian", 0.003, 1, None),
    (1, "hessian", 0.001, 1, None),
    (1, "hessian", 0.0003, 1, None),
    (1, "hessian", 0.001, 1, 1000),
    (2, "gauss_newton", 0.01, 1, None),
    (2, "gauss_newton", 0.003, 1, None),
    (2, "gauss_newton", 0.001, 1, None),
    (2, "gauss_newton", 0.003, 1, 1000),
    (2, "gauss_newton", 0.001, 1, 1000),
    (2, "gauss_newton", 0.03, 1, None),
]
# The published VGG-style network fits its poisoned labels with near certainty, so small damping overshoots:
# its grid reaches larger damping; its last three layers with weights are Dense 512, BatchNorm, logits.
GRID_VGG = [
    (1, "hessian", 0.003, 1, None),
    (1, "hessian", 0.03, 1, None),
    (1, "hessian", 0.1, 1, None),
    (1, "hessian", 0.3, 1, None),
    (1, "hessian", 1.0, 1, None),
    (3, "gauss_newton", 0.03, 1, None),
    (3, "gauss_newton", 0.1, 1, None),
    (3, "gauss_newton", 0.3, 1, None),
    (3, "gauss_newton", 1.0, 1, None),
]
REFIT_L2 = (0.01, 0.1, 1.0, 10.0, 30.0, 100.0)  # the last-layer refit's L2 (summed loss + l2/2 |W|^2)
# The project's method refit (influence_unlearn): L2 per training example, chosen on the validation split
METHOD_L2 = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def refit_last_layer(h: np.ndarray, y: np.ndarray, l2: float, n_classes: int) -> np.ndarray:
    """Multinomial logistic regression on features h (an intercept added, not penalised), fitted to
    convergence by L-BFGS: weights of shape (features + 1, classes)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    a = np.c_[h.astype(np.float64), np.ones(len(h))]
    rows = np.arange(len(y))
    mask = np.ones((a.shape[1], 1))
    mask[-1] = 0.0

    def objective(t):
        w = t.reshape(a.shape[1], n_classes)
        logp = log_softmax(a @ w, axis=1)
        p = np.exp(logp)
        p[rows, y] -= 1.0
        return (-logp[rows, y].sum() + l2 / 2 * ((w * mask) ** 2).sum(), (a.T @ p + l2 * w * mask).ravel())

    fit = minimize(objective, np.zeros(a.shape[1] * n_classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-8})  # fmt: skip
    return fit.x.reshape(a.shape[1], n_classes)


def cifar(data_dir: str, n_train: int, epochs: int, model: str = "cnn", seed: int = 0) -> dict:
    from privstudy.harness.config import from_mapping
    from privstudy.influence_runner import (
        InfluenceConfig,
        _builder,
        _refit,
        load_split,
        make_change,
        preprocess,
    )
    from privstudy.models.training import seed_everything
    from privstudy.unlearning import corrections as co
    from privstudy.unlearning import neural
    from privstudy.unlearning.sisa_train import KerasTrainer, stage_seed

    n_eval = n_val = 5000
    cfg = from_mapping(
        InfluenceConfig,
        {"dataset": "cifar10", "data_dir": data_dir, "model": model, "dropout": None, "train_size": n_train,
         "test_size": n_eval, "val_size": n_val, "flip_budget": n_train // 5, "epochs": epochs, "seed": seed},
    )  # fmt: skip
    data = load_split(cfg)
    change = make_change(cfg, data)
    prep = preprocess(cfg, data)
    x_old, x_new = prep(change.x_old), prep(change.x_new)
    x_eval, y_eval = prep(data.x_test), data.y_test
    x_val, y_val = prep(data.x_val), data.y_val
    seed_everything(seed, True)
    trainer = KerasTrainer(_builder(cfg, x_old.shape[1:], 10), cfg.batch_size, cfg.learning_rate)
    init, order = trainer.init(stage_seed(seed, 0, 0)), stage_seed(seed, 0, 1)
    t = time.perf_counter()
    w_star = trainer.fit(init, x_old, change.y_old, epochs, order)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    w_clean = trainer.fit(init, x_new, change.y_new, epochs, order)
    retrain_s = time.perf_counter() - t

    def score(w):
        acc = {}
        for split, (x, y) in {"val": (x_val, y_val), "eval": (x_eval, y_eval)}.items():
            acc[split] = float((trainer.logits(w, x).argmax(1) == y).mean())
        return acc

    clean, poisoned = score(w_clean), score(w_star)

    def row(name: str, w, seconds: float, **extra) -> dict:
        acc = score(w)
        out = {"method": name, **extra, "time_ratio": seconds / retrain_s, "seconds": seconds}
        for split in ("val", "eval"):
            out[f"acc_{split}"] = acc[split]
            out[f"restored_{split}"] = co.restored_fraction(acc[split], poisoned[split], clean[split])
        return out

    rows = []
    heads = {}
    for last, curvature, damping, steps, sample in [(1, "hessian", 0.0, 1, None)] + (
        GRID_VGG if model == "vgg" else GRID
    ):
        trainer.model.set_weights(w_star)
        if last not in heads:
            heads[last] = neural.Head(trainer.model, last)
            warm = heads[last].inputs(x_new[:2])
            heads[last].gradient(warm, change.y_new[:2], neural.Counts())
            heads[last].hvp(warm, change.y_new[:2], neural.Counts(), curvature="gauss_newton")(
                heads[last].get()
            )
            heads[last].hvp(warm, change.y_new[:2], neural.Counts())(heads[last].get())
        head = heads[last]
        order_ = 1 if damping == 0.0 else 2
        up = neural.unlearn(
            head, order_, change.idx, x_old, change.y_old, x_new, change.y_new, steps=steps,
            damping=damping, curvature=curvature, max_iter=300, seed=seed, hessian_sample=sample,
        )  # fmt: skip
        head.set(up.theta)
        w = trainer.model.get_weights()
        name = "first_order" if order_ == 1 else "second_order"
        rows.append(
            row(name, w, up.seconds, last_layers=last, curvature=curvature, damping=damping, steps=steps,
                hessian_sample=sample, hvps=up.counts.hvps, diverged=up.diverged)
        )  # fmt: skip
        print(rows[-1], flush=True)
    # the project's method refit of the last layer, as the trial runs it: each strength alone, then the
    # choice among all of them on the validation split (its time covers every strength's fit)
    for grid in [(l2,) for l2 in METHOD_L2] + [METHOD_L2]:
        trainer.model.set_weights(w_star)
        weights = {}
        r = _refit(
            dataclasses.replace(cfg, refit_l2=grid, refit_layers=1),
            trainer.model, trainer, x_new, change.y_new, x_val, y_val, weights,
        )  # fmt: skip
        name = "refit" if len(grid) == 1 else "refit_chosen_on_validation"
        rows.append(
            row(name, weights["refit"], r["wall_s"], last_layers=1, l2=r["l2"], hvps=r["hvps"],
                grad_ratio=r["solver_residual"])
        )  # fmt: skip
        print(rows[-1], flush=True)
    trainer.model.set_weights(w_star)
    t = time.perf_counter()
    w_ft = trainer.fit(w_star, x_new, change.y_new, 1, stage_seed(seed, 0, 2))
    rows.append(row("finetune_1_epoch", w_ft, time.perf_counter() - t))
    splits = {"val": (x_val, y_val), "eval": (x_eval, y_eval)}
    for name, w in (("refit_last_layer", w_star), ("refit_last_layer_on_clean_features", w_clean)):
        trainer.model.set_weights(w)
        feats = neural.Head(trainer.model, 1).inputs  # what the logits layer reads, the layers below frozen
        h_train = feats(x_new)
        h_split = {k: feats(x) for k, (x, _) in splits.items()}
        for l2 in REFIT_L2:
            t = time.perf_counter()
            w_last = refit_last_layer(h_train, change.y_new, l2, 10)
            seconds = time.perf_counter() - t
            out = {"method": name, "l2": l2, "time_ratio": seconds / retrain_s, "seconds": seconds}
            for k, (_, y) in splits.items():
                acc = float(((np.c_[h_split[k], np.ones(len(y))] @ w_last).argmax(1) == y).mean())
                out[f"acc_{k}"] = acc
                out[f"restored_{k}"] = co.restored_fraction(acc, poisoned[k], clean[k])
            rows.append(out)
            print(out, flush=True)
    return {
        "model": model,
        "n_train": n_train,
        "epochs": epochs,
        "flips": int(change.n_changed),
        "train_s": train_s,
        "retrain_s": retrain_s,
        "acc_clean": clean,
        "acc_poisoned": poisoned,
        "methods": rows,
    }


def convex() -> list[dict]:
    from privstudy.harness.config import from_mapping
    from privstudy.influence_runner import InfluenceConfig, run

    out = []
    for budget in (2, 10, 50, 100):
        for steps in (1, 2):
            cfg = from_mapping(
                InfluenceConfig,
                {"model": "logreg", "dataset": "digits", "one_vs_rest": 3, "train_size": 1000,
                 "test_size": 500, "lam": 1.0, "flip_budget": budget, "steps": steps, "sisa_shards": 0},
            )  # fmt: skip
            r = run(cfg)["unlearn_method"].set_index("method")
            out.append(
                {"flips": budget, "steps": steps, "dist_none": r.loc["none", "param_dist"],
                 "dist_first": r.loc["first_order", "param_dist"],
                 "dist_second": r.loc["second_order", "param_dist"],
                 "agreement_second": r.loc["second_order", "agreement"]}
            )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(SHARED))
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--model", choices=("cnn", "vgg"), default="cnn", help="the CNN or the published VGG")
    ap.add_argument("--out", default=None, help="default: benchmarks/out/unlearn.json (unlearn_vgg.json)")
    args = ap.parse_args()
    result = {"convex": convex()}
    cifar_dir = Path(args.data_dir) / "cifar10"
    if (cifar_dir / "cifar10.npz").is_file():
        result["cifar10"] = cifar(str(cifar_dir), args.train, args.epochs, args.model)
    else:
        result["cifar10"] = f"skipped: no {cifar_dir / 'cifar10.npz'}"
    write_result(result, args.out or f"benchmarks/out/unlearn{'_vgg' if args.model == 'vgg' else ''}.json")


if __name__ == "__main__":
    main()
