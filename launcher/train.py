"""``rudder train``: one DistDGL training run with a buffer policy, from partitions to summary.

Resolves the partitions, brings up the cluster (emulated, loopback or ssh), writes the run
config and DGL's ip_config, starts one server and T trainers per machine under the
:class:`Supervisor`, and turns the trainers' results into ``summary.json``. A failed run
raises :class:`TrainingError` with the supervisor's report; nothing of the run is left behind.
An output directory that cannot be written (or is nearly full) is an OutputError before
anything starts; one that fails later is an OutputError naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rudder.decisions import DeciderSpec
from rudder.files import OutputError, check_output_dir, output_errors
from rudder.graphs.partitioned import load_partitions
from rudder.launcher.cluster import (
    Cluster,
    LocalCluster,
    ProcessSpec,
    cleanup_stale,
    make_cluster,
    write_ip_config,
)
from rudder.launcher.live import live_view
from rudder.launcher.netns import EmulatedCluster, unprivileged_user
from rudder.launcher.sidecars import AgentSidecars, check_hosts_for_agent, sidecar_endpoints
from rudder.launcher.ssh import DEFAULT_SSH_CMD, SshCluster
from rudder.launcher.summary import fault_record, summarize, write_summary
from rudder.launcher.supervisor import RunReport, Supervisor
from rudder.llm.defaults import DEFAULT_LLM_URL
from rudder.llm.embedded import llm_available
from rudder.trainer_hooks.distdgl.config import PartInfo, TrainingOptions, WorkerConfig

log = logging.getLogger(__name__)

WORKER = [sys.executable, "-m", "rudder.trainer_hooks.distdgl.worker"]
SCRIPT_RUNNER = [sys.executable, "-m", "rudder.trainer_hooks.distdgl.script"]
MASTER_PORT_OFFSET = 1000  # torch.distributed's rendezvous for scripts: PORT + this
SIDECAR_PORT_OFFSET = 2000  # ssh: each host's sidecar on tcp://127.0.0.1:PORT + this
_RUN_OUTPUTS = (
    "trainers",
    "trace",
    "logs",
    "pg-store",
    "summary.json",
    "run.json",
    "ip_config.txt",
    "agent",
)


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainConfig:
    """Everything ``rudder train`` takes: where to run, and how to train (``options``)."""

    partitions: Path
    out: Path
    machines: int = 2
    trainers: int = 1  # per machine
    options: TrainingOptions = field(default_factory=TrainingOptions)
    cluster: str = "auto"
    bandwidth: str | None = None
    ip_config: Path | None = None
    port: int = 30050
    timeout_s: float = 1800.0
    extra_env: dict[str, str] = field(default_factory=dict)
    agent_options: dict[str, str] = field(
        default_factory=dict
    )  # llm_url, llm_model, prompt, checkpoint
    llm_threads: int = 1  # of the embedded LLM server, when the run starts one (docs/llm.md)
    llm_nice: int = 10  # its CPU priority below training's: training never waits for it
    script: Path | None = None  # a user's training script instead of the built-in trainer
    script_args: tuple[str, ...] = ()  # its arguments; {ip_config} etc. are filled in
    ssh_config: Path | None = None  # ssh: the client's config file (ssh -F), e.g. keys, users
    progress: bool | None = None  # a live bar on stderr (None: only on a terminal)
    tensorboard: Path | None = None  # event files under DIR/<run directory's name>/trainer-R

    def __post_init__(self) -> None:
        if self.script is not None and not Path(self.script).is_file():
            raise ValueError(f"--script {self.script}: no such file")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s} s")
        if not 1024 <= self.port <= 65000:
            raise ValueError(f"port must lie in 1024..65000, got {self.port}")
        if not 0 <= self.llm_nice <= 19 or self.llm_threads < 1:
            raise ValueError(
                f"--llm-nice takes 0..19 and --llm-threads >= 1, got {self.llm_nice} and "
                f"{self.llm_threads}"
            )


class TrainingError(RuntimeError):
    """The run did not finish; ``report`` says who died and why."""

    def __init__(self, report: RunReport, out: Path):
        super().__init__(f"training failed: {report.reason} (logs in {out / 'logs'})")
        self.report = report


def _prepare_out(out: Path) -> Path:
    out = out.resolve()
    with output_errors(f"to the output directory {out}"):
        for name in _RUN_OUTPUTS:  # a run directory holds one run: drop the last one's outputs
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    return out


def _specs(
    cfg: TrainConfig,
    wc: WorkerConfig,
    cluster: Cluster,
    run_config: Path,
    run_id: str,
    agent_endpoints: list[str],
    server_user: tuple[int, int] | None = None,
) -> list[ProcessSpec]:
    common = {
        "RUDDER_RUN_CONFIG": str(run_config),
        "RUDDER_RUN_ID": run_id,
        "DGL_DIST_MODE": "distributed",
        "DGL_NUM_SAMPLER": "0",
        "DGL_NUM_CLIENT": str(wc.num_trainers),
        "DGL_CONF_PATH": wc.part_config,
        "DGL_IP_CONFIG": wc.ip_config,
        "DGL_NUM_SERVER": "1",
        "DGL_GRAPH_FORMAT": "csc",
        "DGLBACKEND": "pytorch",
        "OMP_NUM_THREADS": str(cfg.options.threads_per_trainer),
        "PYTHONUNBUFFERED": "1",
        **cfg.extra_env,
    }
    servers, trainers = [], []  # servers first: trainers connect to every server at start-up
    trainer_argv = WORKER
    if cfg.script is not None:
        trainer_argv = [*SCRIPT_RUNNER, str(Path(cfg.script).resolve()), *script_args(cfg, wc)]
        common.update(  # what torch.distributed.run sets up for scripts under DGL's launcher
            MASTER_ADDR=cluster.machine_ip(0),
            MASTER_PORT=str(cfg.port + MASTER_PORT_OFFSET),
            WORLD_SIZE=str(wc.num_trainers),
        )
    for m in range(cfg.machines):
        machine_env = {**common, "RUDDER_MACHINE": str(m)}
        if agent_endpoints:  # this machine's sidecar (an ipc path every namespace can reach)
            machine_env["RUDDER_AGENT_ENDPOINT"] = agent_endpoints[m]
        iface = cluster.interface(m)  # for gloo; the worker finds it by address otherwise
        if iface:
            machine_env["GLOO_SOCKET_IFNAME"] = iface
        name = f"m{m}-server0"
        env = {
            **machine_env,
            "DGL_ROLE": "server",
            "DGL_SERVER_ID": str(m),
            "DGL_KEEP_ALIVE": "0",
            "RUDDER_PROCESS": name,
        }
        if server_user is not None:
            # numba caches compiled code beside the sources, which that user cannot write;
            # the machine's private /dev/shm is writable by all and gone after the run.
            env["NUMBA_CACHE_DIR"] = "/dev/shm/rudder-numba-cache"
        servers.append(
            ProcessSpec(name=name, machine=m, argv=WORKER, env=env, role="server", user=server_user)
        )
        for t in range(cfg.trainers):
            name = f"m{m}-trainer{t}"
            rank = m * cfg.trainers + t
            env = {
                **machine_env,
                "DGL_ROLE": "client",
                "DGL_GROUP_ID": "0",
                "RUDDER_RANK": str(rank),
                "RUDDER_PROCESS": name,
                "RANK": str(rank),
                "LOCAL_RANK": str(t),
            }
            trainers.append(
                ProcessSpec(name=name, machine=m, argv=trainer_argv, env=env, role="trainer")
            )
    return servers + trainers


SCRIPT_PLACEHOLDERS = ("ip_config", "part_config", "graph_name", "epochs", "batch_size", "out")


def script_args(cfg: TrainConfig, wc: WorkerConfig) -> list[str]:
    """The script's arguments with the run's facts filled in for :data:`SCRIPT_PLACEHOLDERS`.

    ``{ip_config}``, ``{part_config}``, ``{graph_name}``, ``{epochs}``, ``{batch_size}``,
    ``{out}``: the script gets the paths ``rudder train`` made without knowing them in advance.
    """
    values = {
        "ip_config": wc.ip_config,
        "part_config": wc.part_config,
        "graph_name": wc.graph_name,
        "epochs": str(cfg.options.epochs),
        "batch_size": str(cfg.options.batch_size),
        "out": wc.out_dir,
    }
    assert set(values) == set(SCRIPT_PLACEHOLDERS)
    out = []
    for arg in cfg.script_args:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


def collect_agent_stats(sidecars: AgentSidecars | None, settle_s: float = 20.0) -> dict | None:
    """Each sidecar's live statistics per trainer (None without sidecars, {} if none answer).

    A decision the trainer got early may still be finishing its answer (the predictions the
    agent's statistics count): wait up to ``settle_s`` for the sidecars to go idle.
    """
    if sidecars is None:
        return None
    deadline = time.monotonic() + settle_s
    while True:
        out: dict = {}
        for i, ep in enumerate(sidecars.endpoints):
            reply = sidecars.stats(i)
            if reply is None:
                log.warning("agent sidecar %d at %s gave no statistics", i, ep)
                continue
            out.update(reply["trainers"])
            if reply["server"].get("not_listed"):  # one reply lists the 64 busiest (stats.py)
                log.warning(
                    "agent sidecar %d listed %s trainers; %s more are not in the summary",
                    i,
                    reply["server"].get("listed"),
                    reply["server"]["not_listed"],
                )
        busy = any(s.get("busy") for s in out.values())
        if not busy or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def _remove_loopback_shm(run_id: str) -> int:
    """Shared-memory segments a loopback run left (a clean DGL exit leaves none)."""
    from rudder.trainer_hooks.distdgl.loopback import shm_prefix

    removed = 0
    for f in Path("/dev/shm").glob(shm_prefix(run_id, 0).rsplit("-m", 1)[0] + "-m*"):
        f.unlink(missing_ok=True)
        removed += 1
    return removed


def run(cfg: TrainConfig, on_event: Callable[[str], None] | None = None) -> dict:
    """Run the training job; returns the summary (also in ``out/summary.json``)."""
    check_output_dir(cfg.out.resolve())  # writable, with room: the first thing checked
    pset = load_partitions(cfg.partitions)
    if pset.num_parts != cfg.machines:
        raise ValueError(
            f"{cfg.partitions} has {pset.num_parts} partitions; DistDGL runs one machine per "
            f"partition, so use --machines {pset.num_parts} (or partition again)"
        )
    if cfg.options.device == "cuda" and cfg.cluster != "ssh":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device on this host")
    if cfg.ssh_config is not None and not Path(cfg.ssh_config).is_file():
        raise ValueError(f"--ssh-config {cfg.ssh_config}: no such file")
    out = _prepare_out(cfg.out)
    tb_dir = _prepare_tensorboard(cfg.tensorboard, out)
    agent_endpoints = []
    if cfg.options.uses_sidecar and cfg.cluster == "ssh":
        # One per host, on the host's loopback: each host's trainers reach their own sidecar.
        agent_endpoints = [f"tcp://127.0.0.1:{cfg.port + SIDECAR_PORT_OFFSET}"] * cfg.machines
    elif cfg.options.uses_sidecar:
        agent_endpoints = sidecar_endpoints(out, cfg.machines)
    run_id = secrets.token_hex(3)
    for leftover in cleanup_stale():  # of earlier runs that crashed; live runs are left alone
        log.warning("removed a leftover of a crashed earlier run: %s", leftover)
    emit = on_event or (lambda line: log.info("%s", line))

    ssh_cmd = [*DEFAULT_SSH_CMD, "-F", str(cfg.ssh_config)] if cfg.ssh_config else None
    with make_cluster(
        cfg.cluster, cfg.machines, run_id, cfg.bandwidth, cfg.ip_config, ssh_cmd=ssh_cmd
    ) as cluster:
        loopback = isinstance(cluster, LocalCluster) and cfg.machines > 1
        with output_errors("the run's configuration"):
            ip_config = write_ip_config(cluster, out / "ip_config.txt", cfg.port)
        wc = WorkerConfig(
            part_config=str(pset.config),
            graph_name=pset.graph,
            parts=tuple(
                PartInfo(
                    p.part,
                    tuple(p.node_range),
                    p.remote_node_count,
                    str(pset.root / p.remote_ranking),
                )
                for p in pset.partitions
            ),
            feat_dim=pset.feat_dim,
            num_classes=pset.num_classes,
            num_nodes=pset.num_nodes,
            num_edges=pset.num_edges,
            ip_config=str(ip_config),
            out_dir=str(out),
            num_machines=cfg.machines,
            trainers_per_machine=cfg.trainers,
            options=cfg.options,
            loopback=loopback,
            orig_nids=str(pset.root / "orig_nids.npy"),
        )
        run_config = out / "run.json"
        with output_errors("the run's configuration"):
            wc.save(run_config)
            (out / "logs").mkdir(parents=True, exist_ok=True)
        server_user = _server_user(cluster, [run_config, ip_config, *_partition_files(pset)])
        mode = type(cluster).__name__
        emit(
            f"run {run_id}: {cfg.machines} machines x {cfg.trainers} trainers ({mode}"
            f"{', ' + cfg.bandwidth if cfg.bandwidth else ''}), policy {cfg.options.policy}, "
            f"{cfg.options.epochs} epochs"
        )
        llm = DeciderSpec.parse(cfg.options.decider).is_llm
        hosts = cluster if isinstance(cluster, SshCluster) else None
        llm_url = cfg.agent_options.get("llm_url", DEFAULT_LLM_URL)
        sidecar_options = {
            "checkpoint": str(out / "agent" / "checkpoint-m{index}.sqlite"),
            **cfg.agent_options,
            "run_id": run_id,
        }
        if hosts is not None and agent_endpoints:
            check_hosts_for_agent(
                hosts, cfg.options.decider, llm_url, cfg.agent_options.get("llm_model")
            )
            (out / "agent").mkdir(mode=0o700, exist_ok=True)
            if llm:  # each host's sidecar uses the LLM at llm_url there, or starts its own
                sidecar_options.update(
                    start_llm_log=str(out / "logs" / "llm-server-m{index}.log"),
                    llm_threads=cfg.llm_threads,
                    llm_nice=cfg.llm_nice,
                )
        server = sidecars = None
        with contextlib.ExitStack() as stack:
            if agent_endpoints:
                # The LLM first (the sidecars call it), then the sidecars (the trainers say
                # hello at start-up); all stopped after the trainers.
                if llm and hosts is None:
                    server = stack.enter_context(
                        llm_available(
                            cfg.agent_options.get("llm_url", DEFAULT_LLM_URL),
                            cfg.agent_options.get("llm_model"),
                            threads=cfg.llm_threads,
                            nice=cfg.llm_nice,
                            log_file=out / "logs" / "llm-server.log",
                        )
                    )
                sidecars = stack.enter_context(
                    AgentSidecars(
                        agent_endpoints,
                        cfg.options.decider,
                        sidecar_options,
                        out / "logs",
                        mode=cfg.options.agent_mode,
                        # an LLM sidecar warms the prompt cache before it answers pings
                        ready_timeout_s=180.0 if llm else 30.0,
                        hosts=hosts,
                    )
                )
            # The supervisor logs its own events (starts, exits, stops).
            sup = stack.enter_context(Supervisor(cluster, out / "logs", timeout_s=cfg.timeout_s))
            cpu0, wall0 = (server.cpu_s() if server is not None else None), time.monotonic()
            specs = _specs(cfg, wc, cluster, run_config, run_id, agent_endpoints, server_user)
            for spec in specs:
                sup.start(spec)
            with live_view(out, cfg.options.epochs, progress=cfg.progress, tensorboard=tb_dir):
                report = sup.wait()
            llm_cpu = _llm_cpu(server, cpu0, time.monotonic() - wall0, cfg)
            agent_stats = collect_agent_stats(sidecars)
    if loopback:
        n = _remove_loopback_shm(run_id)
        if n:
            log.warning("removed %d shared-memory segments the run left in /dev/shm", n)
    sidecar_faults = sidecars.faults() if sidecars is not None else None
    if not report.ok:
        failed = {"ok": False, "reason": report.reason, "run_id": run_id}
        _write_failure(out, {**failed, "faults": fault_record(sidecar_faults, [], cfg.trainers)})
        raise TrainingError(report, out)
    try:
        summary = summarize(cfg, wc, report, out, run_id=run_id, cluster_mode=mode)
    except ValueError as e:
        _write_failure(out, {"ok": False, "reason": str(e), "run_id": run_id})
        raise
    summary["faults"] = fault_record(sidecar_faults, summary["trainers"], cfg.trainers)
    _log_faults(summary["faults"])
    summary["agent"] = agent_stats
    if llm_cpu:
        summary["llm_server"] = llm_cpu
    write_summary(out, summary)
    return summary


def _prepare_tensorboard(root: Path | None, out: Path) -> Path | None:
    """``ROOT/<run name>``, emptied of an earlier run's event files.

    One ``tensorboard --logdir ROOT`` then compares runs side by side, each run once.
    """
    if root is None:
        return None
    tb = Path(root).resolve() / out.name
    with output_errors(f"to the TensorBoard directory {tb}"):
        for old in tb.glob("trainer-*"):
            if old.is_dir():
                shutil.rmtree(old)
        tb.mkdir(parents=True, exist_ok=True)
    return tb


def _partition_files(pset) -> list[Path]:
    return [pset.config, *(p for p in Path(pset.root).rglob("*") if p.is_file())]


def _server_user(cluster: Cluster, reads: list[Path]) -> tuple[int, int] | None:
    """Who the DistDGL servers run as: an unprivileged user in emulated machines if it can.

    The servers unpickle what reaches them over the network (docs/cluster.md); as root, a
    request that gets through would own the host. They need to read only the run's config,
    the partitions and the Python installation; where those are not readable by that user,
    they stay root and the reason is logged. Trainers stay the launcher's user (they write
    results and reach the agent's private socket).
    """
    if not isinstance(cluster, EmulatedCluster) or os.geteuid() != 0:
        return None
    import importlib.util

    code = [Path(sys.executable)]
    for module in ("dgl", "torch", "rudder.trainer_hooks.distdgl.worker"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            code.append(Path(spec.origin))
    user, why = unprivileged_user([*code, *reads])
    if user is None:
        log.warning(
            "DistDGL servers run as root: %s (to let them drop root, keep the Python "
            "environment and the data where every user may read them; docs/cluster.md)",
            why,
        )
    else:
        log.info("DistDGL servers run as uid %d, gid %d", *user)
    return user


def _write_failure(out: Path, summary: dict) -> None:
    """A failed run's summary, best effort: the run's own error is the one to report."""
    try:
        write_summary(out, summary)
    except OutputError as e:
        log.error("%s", e)


def _log_faults(faults: dict) -> None:
    if faults["sidecar_outages"] or faults["fallback_minibatches"]:
        log.warning(
            "the agent was unreachable: %d sidecar outage(s), %d restart(s); %d minibatches "
            "decided without it (skip), %d requests dropped (summary.json: faults)",
            faults["sidecar_outages"],
            faults["sidecar_restarts"],
            faults["fallback_minibatches"],
            faults["dropped_requests"],
        )


def _llm_cpu(server, cpu0: float | None, wall_s: float, cfg: TrainConfig) -> dict | None:
    """The LLM server's CPU use while the trainers ran: seconds, and its share of the host."""
    cpu1 = server.cpu_s() if server is not None else None
    if cpu0 is None or cpu1 is None or wall_s <= 0:
        return None
    cores = os.cpu_count() or 1
    return {
        "cpu_s": round(cpu1 - cpu0, 3),
        "wall_s": round(wall_s, 3),
        "host_cores": cores,
        "cpu_share_pct": round(100.0 * (cpu1 - cpu0) / (wall_s * cores), 2),
        # threads and priority of a server this run started (another one's are its own)
        **({"threads": cfg.llm_threads, "nice": cfg.llm_nice} if server else {}),
    }
