"""Training diagnosis: health signals over a saved run, discriminator AUC and loss balance from a checkpoint."""
