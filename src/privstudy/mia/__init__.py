"""Membership inference: study-level membership (keep matrix), per-example scores, attacks, metrics."""
