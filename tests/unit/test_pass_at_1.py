"""Windowed Pass@1 on hand-made metrics: the window, the noise band, the baselines."""

import dataclasses
import math

import pytest

from rudder.controller.effects import direction, noise_bands
from rudder.controller.graph import GraphAgent
from rudder.protocol import Metrics

W = 4


def _window_hits(t: int) -> float:
    """Windowed %-hits: flat, a step up of 10 points, flat, a step down of 15, flat."""
    if t < 12:
        return 50.0
    if t < 24:
        return 60.0
    return 45.0


def _trace(n: int = 36) -> list[Metrics]:
    zero = {f.name: 0 for f in dataclasses.fields(Metrics)}
    out = []
    for t in range(n):
        wh = _window_hits(t)
        out.append(
            Metrics(
                **{
                    **zero,
                    "trainer": 0,
                    "minibatch": t,
                    "total_minibatches": n,
                    "window": W,
                    "hit_pct": wh + (1.0 if t % 2 else -1.0),  # +-1 point of sampling noise
                    "hit_pct_window": wh,
                    "rows_fetched": 1000,
                    "rows_fetched_window": 1000.0 - 10.0 * (wh - 50.0),
                    "buffer_capacity": 100,
                    "buffer_fill": 100,
                }
            )
        )
    return out


class Oracle:
    """Predicts what the window after landing will show (it reads the future)."""

    name = "oracle"

    def __init__(self):
        self.t = 0

    def answer(self, current, history, on_decision=None):
        j = current["minibatch"] + 1
        change = _window_hits(j + W) - _window_hits(j)
        hit = direction(change, 2.5)
        comm = {"increase": "decrease", "decrease": "increase"}.get(hit, "stagnant")
        decision = "replace" if hit == "increase" else "skip"
        return {
            "decision": decision,
            "reason": "oracle",
            "expected_hit_pct": hit,
            "expected_communication": comm,
        }


def test_the_band_is_two_sigma_of_a_difference_of_window_means():
    records = [m.to_dict() for m in _trace()]
    hit_band, _ = noise_bands(records, W)
    sigma = 1.0 / math.sqrt(1.0 - 1.0 / W)  # deviations from a mean that includes them
    assert hit_band == pytest.approx(2.0 * sigma * math.sqrt(2.0 / W), rel=1e-3)


def test_an_oracle_scores_100_and_constants_score_their_share():
    trace = _trace()
    agent = GraphAgent(Oracle)
    for m in trace:
        agent.decide(0, m)
    s = agent.stats()[0]
    history = agent.state(0)["history"]
    # Decisions on 0 .. n-2-W are judged; the rest still wait for their window.
    assert s["evaluated"] == len(trace) - 1 - W and s["awaiting_evaluation"] == W
    observed = [r["observed_hit_pct"] for r in history]
    for r in history:
        j = r["minibatch"] + 1
        assert (r["before"]["minibatch"], r["after"]["minibatch"]) == (j, j + W)
    assert s["pass_at_1_hits"] == 1.0 and s["pass_at_1_comm"] == 1.0
    n = len(observed)
    assert n == s["evaluated"]  # all fit in the bounded history here
    assert s["baseline_replace_hits"] == observed.count("increase") / n
    assert s["baseline_skip_hits"] == observed.count("stagnant") / n
    assert 0 < observed.count("increase") < n and observed.count("decrease") > 0
    best_constant = max(s["baseline_replace_hits"], s["baseline_skip_hits"])
    assert s["pass_at_1_hits"] >= best_constant + 0.15
    assert 0.0 < s["replace_pct"] < 100.0


def test_changes_inside_the_noise_band_are_stagnant():
    assert direction(1.0, 1.633) == "stagnant"
    assert direction(-1.7, 1.633) == "decrease"
    assert direction(5.0, 1.633) == "increase"
