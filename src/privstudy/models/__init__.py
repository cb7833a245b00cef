"""Keras models of the studies (images, text) and the training loop that fits them."""
