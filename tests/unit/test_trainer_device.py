from unittest import mock

import pytest
import torch

from rudder.trainer_hooks.distdgl.config import PartInfo, TrainingOptions, WorkerConfig
from rudder.trainer_hooks.distdgl.trainer import select_device
from tests.configs import worker_config


def _cfg(device, trainers=2):
    return worker_config(trainers=trainers, device=device)


def test_cpu_needs_no_device():
    assert select_device(_cfg("cpu"), rank=3) is None


def test_cuda_without_a_gpu_is_a_clear_error():
    with (
        mock.patch.object(torch.cuda, "is_available", return_value=False),
        pytest.raises(RuntimeError, match="no CUDA device"),
    ):
        select_device(_cfg("cuda"), rank=0)


def test_one_gpu_per_trainer_on_a_machine():
    with (
        mock.patch.object(torch.cuda, "is_available", return_value=True),
        mock.patch.object(torch.cuda, "device_count", return_value=2),
    ):
        # Ranks 2 and 3 are machine 1's trainers 0 and 1.
        assert [select_device(_cfg("cuda"), r).index for r in (2, 3)] == [0, 1]


def test_config_rejects_what_training_cannot_do():
    with pytest.raises(ValueError, match="offline bound"):
        TrainingOptions(policy="belady")
    with pytest.raises(ValueError, match="2 machines need 2 partitions"):
        WorkerConfig(**_fields(parts=(PartInfo(0, (0, 5), 1, "r"),)))


def _fields(**over):
    cfg = _cfg("cpu")
    base = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
    base.update(over)
    return base
