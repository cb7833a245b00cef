"""privstudy: measure what machine-learning models leak about their training data."""

__version__ = "0.1.0"
