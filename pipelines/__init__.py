"""The transfer-learning KFP pipeline, its CLI (`python -m pipelines`) and its runners."""
