"""A tiny trial kind for harness tests: echoes seed-derived numbers, can fail or sleep on request."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from privstudy.harness.config import TrialConfig, check, param
from privstudy.harness.registry import TrialKind


@dataclasses.dataclass(frozen=True)
class EchoConfig(TrialConfig):
    n_rows: int = param(3, "Rows to emit.")
    fail_seeds: tuple[int, ...] = param((), "Seeds whose trial raises.")
    sleep_s: float = param(0.0, "Seconds to sleep before returning.")
    die_seeds: tuple[int, ...] = param((), "Seeds whose trial kills its own process (SIGKILL).")
    env_var: str = param("", "Name of an environment variable to record in column `env`.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_rows >= 0, "n_rows", f"must be >= 0, got {self.n_rows}")


def run(cfg: EchoConfig) -> dict[str, pd.DataFrame]:
    if cfg.seed in cfg.fail_seeds:
        raise RuntimeError(f"seed {cfg.seed} fails on purpose")
    time.sleep(cfg.sleep_s)
    if cfg.seed in cfg.die_seeds:
        os.kill(os.getpid(), signal.SIGKILL)
    rng = np.random.default_rng(cfg.seed)
    env = os.environ.get(cfg.env_var) if cfg.env_var else None
    return {
        "echo": pd.DataFrame(
            {"i": np.arange(cfg.n_rows), "x": rng.normal(size=cfg.n_rows), "env": [env] * cfg.n_rows}
        )
    }


KIND = TrialKind(
    name="echo",
    description="test kind",
    config_cls=EchoConfig,
    run=run,
    tables={"echo": pa.schema([("i", pa.int64()), ("x", pa.float64()), ("env", pa.string())])},
)
