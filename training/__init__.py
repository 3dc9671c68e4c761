"""Training algorithms that NeMo 2 does not ship (preference optimisation)."""
