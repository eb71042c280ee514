"""The DistDGL side of the trainer hook: the only part of trainer_hooks that imports dgl."""
