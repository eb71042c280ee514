"""summary.json's ``faults``: sidecar outages and each trainer's view, put together."""

from rudder.launcher.summary import fault_record


def _client(**kw) -> dict:
    base = dict(unsent=0, dropped=0, timeouts=0, reconnects=0, outages=0, outage_s=0.0)
    return {**base, "fallback_minibatches": 0, "offline": False, **kw}


def test_faults_join_sidecars_and_their_machines_trainers():
    sidecars = [
        {"index": 0, "restarts": 1, "gave_up": False, "down_s": 3.5,
         "outages": [{"start_s": 4.0, "duration_s": 3.5, "exit": "SIGKILL", "recovered": True}]},
        {"index": 1, "restarts": 0, "gave_up": False, "down_s": 0.0, "outages": []},
    ]  # fmt: skip
    trainers = [  # 2 trainers per machine: ranks 0, 1 on machine 0
        {"rank": 0, "agent": _client(unsent=7, dropped=40, outages=1, fallback_minibatches=30)},
        {"rank": 1, "agent": _client(unsent=2, dropped=35, outages=1, fallback_minibatches=25)},
        {"rank": 2, "agent": _client(dropped=31)},
        {"rank": 3, "agent": None},  # an in-process decider: no client
    ]
    f = fault_record(sidecars, trainers, trainers_per_machine=2)
    assert f["sidecar_restarts"] == 1 and f["sidecar_outages"] == 1
    assert f["dropped_requests"] == 9  # unsent only: the async stale-request drop is by design
    assert f["stale_requests_dropped"] == (40 - 7) + (35 - 2) + 31
    assert f["fallback_minibatches"] == 55
    assert [s["fallback_minibatches"] for s in f["sidecars"]] == [55, 0]
    assert f["sidecars"][0]["outages"][0]["exit"] == "SIGKILL"
    assert sorted(f["trainers"]) == ["0", "1", "2"] and f["trainers"]["0"]["unsent"] == 7


def test_no_sidecars_no_faults():
    f = fault_record(None, [{"rank": 0, "agent": None}], trainers_per_machine=1)
    assert f == {
        "sidecar_restarts": 0,
        "sidecar_outages": 0,
        "dropped_requests": 0,
        "stale_requests_dropped": 0,
        "fallback_minibatches": 0,
        "sidecars": [],
        "trainers": {},
    }
