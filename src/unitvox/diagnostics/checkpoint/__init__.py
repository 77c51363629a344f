"""Checkpoint diagnosis: does a checkpoint fit the model the config builds, and the remapping that makes it load."""
