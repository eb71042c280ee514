"""What runs inside a trainer: the persistent buffer, its policies, metrics and traces.

Nothing here imports DistDGL, so the core can be tested and replayed on its own. The public
hook for a training script is :class:`BufferedFeatures` (docs/api.md), configured by
:class:`RudderConfig`; both are imported on first use, so ``import rudder.trainer_hooks``
stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rudder.trainer_hooks.buffered import BufferedFeatures
    from rudder.trainer_hooks.options import RudderConfig

__all__ = ["BufferedFeatures", "RudderConfig"]


def __getattr__(name: str) -> Any:
    if name == "BufferedFeatures":
        from rudder.trainer_hooks.buffered import BufferedFeatures

        return BufferedFeatures
    if name == "RudderConfig":
        from rudder.trainer_hooks.options import RudderConfig

        return RudderConfig
    raise AttributeError(f"module 'rudder.trainer_hooks' has no attribute {name!r}")
