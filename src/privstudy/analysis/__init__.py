"""Analysis: reads result shards (never TensorFlow) and writes tables, figures and a report."""
