"""The featurestore command line (typer)."""
