"""Statistics: rank AUC and Spearman correlation (`ranks`), intervals and bounds (`intervals`)."""
