"""The wire protocol between trainers and their decision agent, both sides (docs/protocol.md).

- :mod:`~rudder.protocol.messages`: the typed frozen dataclasses, the message bodies
  (``Metrics``, ``AgentDecision``, ``TrainerInfo``) and the messages (``Hello``,
  ``MetricsReport``, ``DecisionReply``, ...), each with its ``KIND``; no msgpack.
- :mod:`~rudder.protocol.codec`: versions, size limit, ``encode``/``decode`` and
  ``ProtocolError``, with one generic validator that checks every field against its
  dataclass's annotations.
- :mod:`~rudder.protocol.endpoints`: ``ipc://``/``tcp://`` endpoints, checked before use
  (another user's socket or directory is refused), and the private per-user socket directory.

Everything public is importable from ``rudder.protocol`` itself.
"""

from rudder.decisions import DIRECTIONS, Decision
from rudder.protocol.codec import (
    KINDS,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_VALUES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    ProtocolError,
    brief,
    decode,
    encode,
    from_wire,
    to_wire,
)
from rudder.protocol.endpoints import (
    IPC_PATH_MAX,
    UnsafeEndpointError,
    check_endpoint,
    check_ipc_path,
    endpoint_scheme,
    ipc_endpoint,
    ipc_path,
    private_dir,
    runtime_dir,
)
from rudder.protocol.messages import (
    DECISIONS,
    ERROR_REASONS,
    METRICS_VERSION,
    MODES,
    AgentDecision,
    Bye,
    DecisionReply,
    ErrorReply,
    Hello,
    Metrics,
    MetricsReport,
    Ping,
    Pong,
    StatsReply,
    StatsRequest,
    TrainerInfo,
)

__all__ = [
    "DECISIONS",
    "DIRECTIONS",
    "ERROR_REASONS",
    "IPC_PATH_MAX",
    "KINDS",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_VALUES",
    "METRICS_VERSION",
    "MODES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "AgentDecision",
    "Bye",
    "Decision",
    "DecisionReply",
    "ErrorReply",
    "Hello",
    "Message",
    "Metrics",
    "MetricsReport",
    "Ping",
    "Pong",
    "ProtocolError",
    "StatsReply",
    "StatsRequest",
    "TrainerInfo",
    "UnsafeEndpointError",
    "brief",
    "check_endpoint",
    "check_ipc_path",
    "decode",
    "encode",
    "endpoint_scheme",
    "from_wire",
    "ipc_endpoint",
    "ipc_path",
    "private_dir",
    "runtime_dir",
    "to_wire",
]
