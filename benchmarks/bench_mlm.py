"""Benchmark the masked-LM study's two costs, side by side in one run: pseudo-log-likelihood scoring
throughput (sequences per second) batched as masked copies against one masked position per forward
pass, and training time per epoch.

    python benchmarks/bench_mlm.py [--out benchmarks/out/mlm.json]

For each model size (the CPU default: width 128, 2 blocks; the cluster default: width 256, 4 blocks;
both 32-token windows, a 5,000-entry vocabulary), on windows of the built-in synthetic notes:
PLL of ``--sequences`` windows batched (``pll``, at several copies per pass) and of ``--slow`` windows one
position at a time (a traced single-copy forward pass per position, so the comparison is not Python's
overhead), checking both give the same numbers; and one training epoch over ``--train`` windows after a
warm-up epoch. Absolute times are noise on a shared machine; the ratios are measured in one process.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SIZES = {
    "cpu default (128 x 2)": {"dim": 128, "layers": 2, "heads": 4, "ff_dim": 512},
    "cluster (256 x 4)": {"dim": 256, "layers": 4, "heads": 4, "ff_dim": 1024},
}


def windows(n: int, seq_len: int, vocab: int):
    from privstudy.data import subword
    from privstudy.data.clinical import synthetic_notes

    corpus = synthetic_notes(1500, seed=0)
    tok = subword.train_tokenizer(corpus.texts, vocab)
    ids = tok.encode(corpus.texts)
    w = subword.windows(ids, np.arange(len(ids)), seq_len, 8)
    rows = np.resize(np.arange(len(w)), n)
    return w.tokens[rows], w.lengths[rows], tok.vocab_size


def slow_pll(encoder, head, tokens, lengths):
    import tensorflow as tf

    from privstudy.data.subword import MASK

    @tf.function
    def one(x, t, true):
        h = encoder(x, training=False)
        return tf.nn.log_softmax(head(h[:, t, :], training=False))[0, true]

    out = np.zeros(len(lengths))
    for i, (row, k) in enumerate(zip(tokens, lengths)):
        for t in range(int(k)):
            x = row.copy()
            x[t] = MASK
            out[i] += float(one(tf.constant(x[None, :]), tf.constant(t), tf.constant(int(row[t]))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=512, help="windows scored batched")
    parser.add_argument("--slow", type=int, default=16, help="windows scored one position at a time")
    parser.add_argument("--train", type=int, default=4096, help="windows per training epoch")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--out", default="benchmarks/out/mlm.json")
    args = parser.parse_args()

    from privstudy.harness.tf_setup import configure_tensorflow
    from privstudy.models import mlm
    from privstudy.models.training import seed_everything

    configure_tensorflow(2)
    tokens, lengths, vocab = windows(max(args.sequences, args.train), args.seq_len, args.vocab)
    rows = []
    for name, size in SIZES.items():
        seed_everything(0, False)
        enc, head = mlm.build_mlm(mlm.MlmShape(vocab, args.seq_len, dropout=0.1, **size))
        mlm.train_mlm(enc, head, tokens[:256], lengths[:256], 1, 32, 1e-4, 0)  # trace the step
        t0 = time.perf_counter()
        fit = mlm.train_mlm(enc, head, tokens[: args.train], lengths[: args.train], 1, 32, 1e-4, 1)
        epoch_s = time.perf_counter() - t0
        row = {
            "model": name,
            "n_params": mlm.n_params(enc, head),
            "train_windows": args.train,
            "train_epoch_s": epoch_s,
            "train_tokens_per_s": fit.tokens_per_epoch / epoch_s,
        }
        s_tok, s_len = tokens[: args.slow], lengths[: args.slow]
        slow_pll(enc, head, s_tok[:1], s_len[:1])  # trace
        t0 = time.perf_counter()
        slow = slow_pll(enc, head, s_tok, s_len)
        row["slow_seq_per_s"] = args.slow / (time.perf_counter() - t0)
        for copies in (512, 2048, 8192):
            mlm.pll(enc, head, tokens[:8], lengths[:8], copies)  # trace
            t0 = time.perf_counter()
            fast = mlm.pll(enc, head, tokens[: args.sequences], lengths[: args.sequences], copies)
            row[f"batched_{copies}_seq_per_s"] = args.sequences / (time.perf_counter() - t0)
            row[f"batched_{copies}_max_abs_diff"] = float(np.max(np.abs(fast[: args.slow] - slow)))
        best = max(row[f"batched_{c}_seq_per_s"] for c in (512, 2048, 8192))
        row["speedup_batched_over_slow"] = best / row["slow_seq_per_s"]
        rows.append(row)
        print(
            f"{name}: {row['n_params']} params; epoch of {args.train} windows {epoch_s:.1f} s "
            f"({row['train_tokens_per_s']:.0f} tokens/s); PLL one position at a time "
            f"{row['slow_seq_per_s']:.2f} seq/s, batched "
            + ", ".join(f"{c}: {row[f'batched_{c}_seq_per_s']:.1f}" for c in (512, 2048, 8192))
            + f" seq/s (x{row['speedup_batched_over_slow']:.0f})",
            flush=True,
        )
    write_result({"benchmark": "mlm", "seq_len": args.seq_len, "vocab": vocab, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
