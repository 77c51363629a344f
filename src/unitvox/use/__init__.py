"""Using a trained model: export, encode, vocode and resynthesize (the commands and what they read)."""
