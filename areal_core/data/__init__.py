"""Datasets, packed batches and micro-batch planning."""
