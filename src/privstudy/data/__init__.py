"""Datasets in their standard public formats: images, text, and where their files are found."""
