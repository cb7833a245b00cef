"""Machine unlearning: SISA's exact unlearning (``sisa``)."""
