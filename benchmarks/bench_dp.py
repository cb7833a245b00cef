"""Benchmark DP-SGD's training-time overhead against plain training, for the LSTM and the CNN, with the
plain and the vectorized tensorflow-privacy optimizers (ratios measured side by side in one run).

    python benchmarks/bench_dp.py [--n 1280] [--batch 64] [--out benchmarks/out/dp.json]

Inputs are random (token ids for the LSTM, 32x32x3 images for the CNN): speed does not depend on the
data. Every configuration trains one epoch after a warm-up epoch; DP runs clip per example
(microbatches = batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def epoch_seconds(build, x, y, batch: int, optimizer: str | None) -> float:
    from privstudy.defences.dp import make_optimizer
    from privstudy.models.training import FitOptions, fit, seed_everything

    seed_everything(0)
    model = build()
    opt = None if optimizer is None else make_optimizer(optimizer, 1e-3, 1.0, 1.1, batch)
    opts = FitOptions(epochs=1, batch_size=batch, dp_loss=optimizer is not None)
    fit(model, x, y, opts, optimizer=opt)  # warm-up, tracing
    t0 = time.perf_counter()
    fit(model, x, y, opts, optimizer=opt)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from privstudy.models.image import build_image_model
    from privstudy.models.text import build_text_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1280)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", default="benchmarks/out/dp.json")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    models = {
        "lstm": (lambda: build_text_model(), rng.integers(0, 20000, (a.n, 100)), rng.integers(0, 2, a.n)),
        "cnn": (
            lambda: build_image_model("cnn", (32, 32, 3), 10),
            rng.normal(size=(a.n, 32, 32, 3)).astype(np.float32),
            rng.integers(0, 10, a.n),
        ),
    }
    result = {"n": a.n, "batch": a.batch}
    for name, (build, x, y) in models.items():
        times = {
            opt or "plain": epoch_seconds(build, x, y, a.batch, opt)
            for opt in (None, "adam", "adam_vectorized")
        }
        result[name] = {
            "seconds_per_epoch": times,
            "ratio_dp_adam": times["adam"] / times["plain"],
            "ratio_dp_adam_vectorized": times["adam_vectorized"] / times["plain"],
        }
        print(name, json.dumps(result[name]), flush=True)
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
