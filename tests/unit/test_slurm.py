"""A SLURM allocation becomes an ip_config: ``rudder cluster ip-config --from-slurm``.

``scontrol`` is a fake here (a script on PATH that expands a fixed node list the way the
real one does); host names are resolved by the real resolver where they must be (localhost)
and by an injected table elsewhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rudder.cli.main import main
from rudder.launcher.cluster import read_ip_config
from rudder.launcher.slurm import SlurmError, SlurmNode, ip_config_text, slurm_nodes

# What `scontrol show hostnames 'node[01-03]'` prints on a real cluster.
FAKE_SCONTROL = """#!/bin/sh
[ "$1 $2" = "show hostnames" ] || { echo "usage: scontrol show hostnames LIST" >&2; exit 1; }
case "$3" in
  'node[01-03]') printf 'node01\\nnode02\\nnode03\\n' ;;
  'node[01-02]') printf 'node01\\nnode02\\n' ;;
  'nodeself') echo localhost ;;
  'ghost') echo ghost.invalid ;;
  *) echo "scontrol: error: Invalid node name specified" >&2; exit 1 ;;
esac
"""
ADDRESSES = {"node01": "10.1.0.11", "node02": "10.1.0.12", "node03": "10.1.0.13"}


@pytest.fixture
def scontrol(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "bin" / "scontrol"
    path.parent.mkdir()
    path.write_text(FAKE_SCONTROL)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{path.parent}:{os.environ['PATH']}")
    return path


def _nodes(env: dict[str, str], addresses=ADDRESSES, **kw) -> list[SlurmNode]:
    return slurm_nodes(env=env, resolve=lambda h: addresses[h], **kw)


def test_the_allocation_in_order_with_its_addresses(scontrol):
    nodes = _nodes({"SLURM_JOB_NODELIST": "node[01-03]", "SLURM_JOB_NUM_NODES": "3"})
    assert nodes == [SlurmNode(h, ip) for h, ip in ADDRESSES.items()]
    text = ip_config_text(nodes, 30050)
    assert text == "10.1.0.11 30050\n10.1.0.12 30050\n10.1.0.13 30050\n"


def test_the_file_reads_back_as_rudder_train_reads_it(scontrol, tmp_path):
    path = tmp_path / "ip_config.txt"
    path.write_text(ip_config_text(_nodes({"SLURM_JOB_NODELIST": "node[01-02]"}), 4000))
    assert read_ip_config(path) == [("10.1.0.11", 4000), ("10.1.0.12", 4000)]


def test_nodelist_argument_wins_over_the_environment(scontrol):
    nodes = _nodes({"SLURM_JOB_NODELIST": "node[01-03]"}, nodelist="node[01-02]")
    assert [n.host for n in nodes] == ["node01", "node02"]


@pytest.mark.parametrize(
    ("env", "kw", "message"),
    [
        ({}, {}, "$SLURM_JOB_NODELIST is not set"),
        ({"SLURM_JOB_NODELIST": "gpu[1-2]"}, {}, "Invalid node name specified"),
        (
            {"SLURM_JOB_NODELIST": "node[01-02]", "SLURM_JOB_NUM_NODES": "3"},
            {},
            "expands to 2 hosts but $SLURM_JOB_NUM_NODES is 3",
        ),
        ({"SLURM_JOB_NODELIST": "node[01-02]"}, {"scontrol": "no-such-scontrol"}, "not found"),
    ],
)
def test_what_cannot_become_an_ip_config_is_a_clear_error(scontrol, env, kw, message):
    with pytest.raises(SlurmError) as e:
        _nodes(env, **kw)
    assert message in str(e.value)


def test_a_host_resolving_to_loopback_is_named(scontrol):
    with pytest.raises(SlurmError, match=r"localhost resolves to the loopback address 127\."):
        slurm_nodes(env={"SLURM_JOB_NODELIST": "nodeself"})  # the real resolver


def test_two_hosts_on_one_address_are_named(scontrol):
    same = {"node01": "10.1.0.11", "node02": "10.1.0.11"}
    with pytest.raises(SlurmError, match="node01 and node02 resolve to the same address"):
        _nodes({"SLURM_JOB_NODELIST": "node[01-02]"}, addresses=same)


def test_an_unknown_host_name_is_named(scontrol):
    with pytest.raises(SlurmError, match=r"ghost\.invalid: cannot resolve"):
        slurm_nodes(env={"SLURM_JOB_NODELIST": "ghost"})  # .invalid: never resolves (RFC 6761)


def test_the_command_writes_the_file_or_says_why(scontrol, tmp_path, monkeypatch, capsys):
    import rudder.launcher.slurm as slurm

    monkeypatch.setattr(slurm, "resolve_ipv4", ADDRESSES.__getitem__)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[01-03]")
    out = tmp_path / "run" / "ip_config.txt"
    assert main(["cluster", "ip-config", "--from-slurm", "--port", "30100", "--out", str(out)]) == 0
    assert read_ip_config(out) == [(ip, 30100) for ip in ADDRESSES.values()]
    assert "node03 -> 10.1.0.13" in capsys.readouterr().err

    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert main(["cluster", "ip-config", "--from-slurm", "--out", str(out)]) == 2
    assert "SLURM_JOB_NODELIST is not set" in capsys.readouterr().err
    assert read_ip_config(out) == [(ip, 30100) for ip in ADDRESSES.values()]  # kept as it was
