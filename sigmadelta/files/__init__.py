"""The package's file formats: scales files (:mod:`.scales`, JSON) and fine-tuning checkpoints
(:mod:`.checkpoints`, ``torch.save`` of plain data, loaded with ``weights_only=True``). Formats only: what learns
the values is in :mod:`sigmadelta.learn`."""
