"""Preference data (DPO, SimPO): pair files read and tokenized (:mod:`data.preference.pairs`) and served to
NeMo training (:mod:`data.preference.datamodule`); ``python -m data.preference`` tokenizes pair files."""
