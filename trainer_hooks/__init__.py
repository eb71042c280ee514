"""What runs inside a trainer: the persistent buffer, its policies, metrics and traces.

Nothing here imports DistDGL, so the core can be tested and replayed on its own.
"""
