"""Pipeline steps: plain Python, importable and testable without KFP or a cluster."""
