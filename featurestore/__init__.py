"""featurestore: declare features once; train and serve the same values."""
__version__ = "0.1.0"
