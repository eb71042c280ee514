"""Rudder: steering persistent-buffer prefetching in distributed GNN training.

The components live in top-level folders of the repository and install as subpackages here:
``rudder.trainer_hooks`` (buffer, scoring, policies, traces, replay), ``rudder.graphs``
(datasets, partitioning, synthetic traces), ``rudder.controller`` (the decision agent) and
``rudder.prompts`` (prompt templates).
"""

__version__ = "0.1.0"
