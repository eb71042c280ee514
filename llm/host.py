"""The resident model of ``rudder llm serve``, and the installed ones that can be swapped in.

Thread-safe and synchronous: the HTTP server calls it from its worker threads, never from the
event loop (a swap loads a model for seconds, a listing may hash a changed file once).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rudder.llm import models
from rudder.llm.engine import Engine, SharedLock


class ModelNotFoundError(LookupError):
    """The request names a model that is not installed (a 404, as in Ollama)."""


def base_name(name: str) -> str:
    """``name`` without Ollama's default ``:latest`` tag."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How each model is loaded: llama.cpp threads, tokens per slot, slots."""

    threads: int = 2
    ctx: int = 2048  # tokens per slot
    parallel: int = 2  # slots: requests decoded side by side (one agent per trainer on a node)


class ModelHost:
    """One model in memory; a request naming another installed model swaps it in."""

    def __init__(self, model: str, config: EngineConfig):
        card, path = models.resolve(model)
        self.config = config
        self._extra = {} if card else {Path(path).stem: path}  # a model served from a path
        self.name = card.name if card else Path(path).stem
        self.engine = self._engine(path)
        # Requests share the resident model; swapping in another one waits for them.
        self.lock = SharedLock()

    def _engine(self, path: str | Path) -> Engine:
        c = self.config
        return Engine(path, threads=c.threads, ctx=c.ctx, parallel=c.parallel)

    @contextlib.contextmanager
    def use(self, requested: str) -> Iterator[tuple[Engine, int]]:
        """The engine for ``requested`` (swapped in if needed) and the swap time in ns."""
        swap_ns = 0
        while True:
            with self.lock.shared():
                if base_name(requested) == self.name:
                    yield self.engine, swap_ns
                    return
            with self.lock.exclusive():
                if base_name(requested) != self.name:
                    swap_ns = self._swap(requested)

    def available(self) -> dict[str, tuple[models.ModelCard | None, Path]]:
        found = {m.name: (m.card, Path(m.path)) for m in models.installed()}
        found.update({n: (None, Path(p)) for n, p in self._extra.items()})
        return found

    def _swap(self, requested: str) -> int:
        """Load ``requested`` in place of the resident model; the load time in ns."""
        name = base_name(requested)
        avail = self.available()
        if name not in avail:
            choices = ", ".join(sorted(f"{n}:latest" for n in avail)) or "none"
            raise ModelNotFoundError(
                f'model "{requested[:200]}" not found, try pulling it first '
                f"(`rudder models fetch NAME`); available: {choices}"
            )
        t0 = time.perf_counter()
        self.engine.close()
        self.engine = self._engine(avail[name][1])
        self.name = name
        return int((time.perf_counter() - t0) * 1e9)

    def describe(self, name: str) -> dict:
        """Ollama's description of an installed model (``/api/tags``, ``/api/show``)."""
        card, path = self.available().get(base_name(name), (None, None))
        if path is None:
            raise ModelNotFoundError(f'model "{name[:200]}" not found')
        stat = path.stat()
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": card.family if card else "",
            "families": [card.family] if card else [],
            "parameter_size": card.parameter_size if card else "",
            "quantization_level": card.quantization if card else "",
        }
        return {
            "name": f"{base_name(name)}:latest",
            "model": f"{base_name(name)}:latest",
            "size": stat.st_size,
            "digest": card.sha256 if card else "",
            "modified_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(),
            "details": details,
            "path": path,
        }

    def close(self) -> None:
        self.engine.close()
