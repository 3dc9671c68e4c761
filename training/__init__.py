"""What NeMo 2 lacks inside training: preference optimisation, checkpoint averaging at the end of a run."""
