"""A fraud model on featurestore, end to end: ``python -m examples.fraud.run``."""
