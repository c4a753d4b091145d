"""Serving a trained run: export to a SavedModel with a raw-image signature,
and prediction through it (`seqmnist-export`, `seqmnist-predict`)."""
