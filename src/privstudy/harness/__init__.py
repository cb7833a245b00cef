"""The study harness: trial kinds, study specs, result shards, executors and sweeps."""
