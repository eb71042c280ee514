"""A user's own DistDGL script with Rudder: examples/node_classification.py, run for real.

(a) through ``rudder train --script`` (decisions from the machines' agent sidecars), and
(b) the way DGL's own launcher starts scripts: the same file as server and trainer, DGL's
environment and torch.distributed's, Rudder configured by ``RUDDER_*`` variables only.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from training_support import make_parts, no_leftovers, rudder, run_processes  # noqa: F401

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node_classification.py"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return make_parts(tmp_path_factory.mktemp("graph"))


@pytest.mark.usefixtures("no_leftovers")
def test_the_example_under_rudder_train_serves_exact_rows_with_sidecar_decisions(parts, tmp_path):
    out = tmp_path / "run"
    # every:3 in sync mode: the sidecar answers each minibatch before the next one, so the
    # decisions are the ones an in-process every:3 makes and the trace replays exactly.
    common = ("--policy", "rudder", "--decider", "every:3", "--buffer", 0.25)
    rudder(
        "-q",
        "train",
        "--partitions",
        parts,
        "--out",
        out,
        "--machines",
        2,
        "--epochs",
        2,
        "--batch-size",
        100,
        *common,
        "--agent",
        "sidecar",
        "--agent-mode",
        "sync",
        "--verify-features",
        "--record-trace",
        "--timeout",
        300,
        "--script",
        EXAMPLE,
        "--",
        "--num_epochs",
        "{epochs}",
        "--batch_size",
        "{batch_size}",
        "--log_every",
        1000,
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] and s["epochs"] == 2 and len(s["trainers"]) == 2
    assert s["policy"] == "rudder" and s["decider"] == "every:3"
    v = s["verification"]
    assert v["mismatches"] == 0 and v["hits_checked"] == sum(
        t["totals"]["hits"] for t in s["trainers"]
    )
    assert v["hits_checked"] > 0
    # Decisions came from the sidecars: each trainer's client applied them, and each sidecar's
    # agent counted the decisions it made for it.
    for t in s["trainers"]:
        assert t["agent"] is not None and t["agent"]["requests"] > 0
        assert t["decisions"] > 0 and t["replace_decisions"] > 0
    assert s["agent"] and all(a["agent"]["decisions"] > 0 for a in s["agent"].values())
    logs = (out / "logs" / "m0-trainer0.log").read_text()
    assert "epoch 1: " in logs and "train acc" in logs  # the script's own output
    assert run_processes(out) == []

    for t in s["trainers"]:
        replay_json = tmp_path / f"replay-{t['rank']}.json"
        rudder(
            "-q",
            "replay",
            "--trace",
            out / "trace",
            "--rank",
            t["rank"],
            *common,
            "--json",
            replay_json,
        )
        replayed = json.loads(replay_json.read_text())["results"][0]
        assert replayed["hits"] == t["totals"]["hits"]
        assert replayed["rows_fetched"] == t["totals"]["rows_fetched"]


@pytest.mark.skipif(os.geteuid() != 0, reason="emulated hosts need network namespaces (root)")
@pytest.mark.usefixtures("no_leftovers")
def test_the_example_launched_the_dgl_way(parts, tmp_path):
    from rudder.launcher.cluster import ProcessSpec, make_cluster, write_ip_config
    from rudder.launcher.supervisor import Supervisor

    # Partitions as DGL's own partition_graph leaves them: no rudder.json, so the buffer is
    # sized on each partition's 1-hop halo.
    dgl_parts = tmp_path / "parts"
    shutil.copytree(parts, dgl_parts)
    (dgl_parts / "rudder.json").unlink()
    part_config = next(dgl_parts.glob("*.json"))
    out = tmp_path / "out"
    with make_cluster("netns", 2, "dglway") as cluster:
        ip_config = write_ip_config(cluster, tmp_path / "ip_config.txt", 30150)
        dgl_env = {  # what tools/launch.py sets
            "DGL_DIST_MODE": "distributed",
            "DGL_NUM_SAMPLER": "0",
            "DGL_NUM_CLIENT": "2",
            "DGL_CONF_PATH": str(part_config),
            "DGL_IP_CONFIG": str(ip_config),
            "DGL_NUM_SERVER": "1",
            "DGL_GRAPH_FORMAT": "csc",
            "OMP_NUM_THREADS": "1",
            # torch.distributed.run, which launch.py wraps the trainer command in:
            "MASTER_ADDR": cluster.machine_ip(0),
            "MASTER_PORT": "31150",
            "WORLD_SIZE": "2",
            # Rudder, configured by the environment alone:
            "RUDDER_POLICY": "rudder",
            "RUDDER_DECIDER": "heuristic",
            "RUDDER_BUFFER_FRACTION": "0.25",
            "RUDDER_VERIFY_FEATURES": "1",
            "RUDDER_OUT_DIR": str(out),
        }
        argv = [sys.executable, str(EXAMPLE), "--num_epochs", "2", "--batch_size", "100"]
        with Supervisor(cluster, tmp_path / "logs", timeout_s=300) as sup:
            for m in range(2):
                env = {**dgl_env, "GLOO_SOCKET_IFNAME": cluster.interface(m) or ""}
                server = {"DGL_ROLE": "server", "DGL_SERVER_ID": str(m), "DGL_KEEP_ALIVE": "0"}
                sup.start(ProcessSpec(f"m{m}-server0", m, argv, {**env, **server}, "server"))
            for m in range(2):
                env = {**dgl_env, "GLOO_SOCKET_IFNAME": cluster.interface(m) or ""}
                trainer = {"DGL_ROLE": "client", "DGL_GROUP_ID": "0", "RANK": str(m)}
                sup.start(
                    ProcessSpec(
                        f"m{m}-trainer0", m, argv, {**env, **trainer, "LOCAL_RANK": "0"}, "trainer"
                    )
                )
            report = sup.wait()
    assert report.ok, report.reason
    for rank in range(2):
        r = json.loads((out / "trainers" / f"rank-{rank}.json").read_text())
        assert r["decider"] == "heuristic" and len(r["epochs"]) == 2
        assert 0 < r["capacity"] < r["remote_node_count"]  # a quarter of the halo
        assert r["totals"]["hits"] > 0 and r["decisions"] > 0
        assert r["verification"]["mismatches"] == 0
        assert r["verification"]["hits_checked"] == r["totals"]["hits"]
