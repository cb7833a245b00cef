"""The linear-programming pipeline: the query grid and LP-trained linear classifiers."""
