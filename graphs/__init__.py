"""Graphs to train on: generated graphs, partitions, sampling, synthetic access traces."""
