"""Confidence vs similarity: LP classifiers on grids, nearest neighbours, extreme sets and binned curves."""
