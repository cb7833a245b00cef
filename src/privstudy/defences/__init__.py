"""Defences against membership inference: DP-SGD, adversarial regularisation, output release."""
