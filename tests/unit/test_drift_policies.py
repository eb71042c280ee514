"""Policy targets on recorded DistDGL traces of each scenario, against bounds computed here.

The fixtures (``tests/fixtures/traces/distdgl-<scenario>-rank-0.npz``) are trainer 0's access
traces of real 2-machine ``rudder train --policy none --scenario S --record-trace`` runs on a
ring graph with a random partition (``tests/fixtures/traces/README.md`` says how to remake
them). Every target is an inequality against ``best-static`` and ``belady`` replayed on the
same trace in the same test: no figure is hard-coded.
"""

from pathlib import Path

import numpy as np
import pytest

from rudder.trainer_hooks.drift import measure_drift
from rudder.trainer_hooks.policies.registry import PolicySpec
from rudder.trainer_hooks.replay import ReplayConfig, context_for, replay
from rudder.trainer_hooks.trace import load_trace

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
FRACTIONS = (0.05, 0.25)


def _trace(scenario):
    return load_trace(FIXTURES / f"distdgl-{scenario}-rank-0.npz")


def _rows(trace, fraction, policy="rudder", decider="heuristic"):
    ctx = context_for(trace, [PolicySpec.parse("belady"), PolicySpec.parse("best-static")])
    config = ReplayConfig(buffer_fraction=fraction, decider=decider)
    return replay(trace, policy, config, ctx).totals.rows_fetched


@pytest.fixture(scope="module", params=["stationary", "locality", "eval", "temporal"])
def scenario(request):
    return request.param


def test_fixtures_were_recorded_by_distdgl(scenario):
    t = _trace(scenario)
    assert t.meta.source == "distdgl" and t.meta.extra.get("scenario") == scenario
    assert t.num_minibatches > 20


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_on_stationary_access_rudder_stays_within_5pct_of_the_best_fixed_buffer(fraction):
    t = _trace("stationary")
    best_static = _rows(t, fraction, "best-static")
    assert _rows(t, fraction) <= 1.05 * best_static
    assert measure_drift(t, fraction).verdict == "stationary"


@pytest.mark.parametrize("scenario_name", ["locality", "temporal"])
def test_drift_is_real_and_the_decider_matters(scenario_name):
    t = _trace(scenario_name)
    report = measure_drift(t, 0.25)
    assert report.verdict == "drifting"
    assert report.best_static_rows >= 1.6 * report.belady_rows
    always, never = _rows(t, 0.25, decider="always"), _rows(t, 0.25, decider="never")
    assert never >= 1.15 * always  # replacing when the working set moves is what pays


@pytest.mark.parametrize("scenario_name", ["locality", "temporal"])
def test_the_best_online_decider_beats_the_best_fixed_buffer_on_drift(scenario_name):
    t = _trace(scenario_name)
    best = min(_rows(t, 0.25, decider=d) for d in ("always", "heuristic", "never"))
    assert best <= 0.8 * _rows(t, 0.25, "best-static")


def test_evaluation_passes_are_marked_and_the_heuristic_leaves_them_alone():
    t = _trace("eval")
    phases = t.phases()
    assert phases.any() and not phases.all()
    ctx = context_for(t, [PolicySpec.parse("best-static")])
    metrics = []
    replay(t, "rudder", ReplayConfig(buffer_fraction=0.25), ctx, on_metrics=metrics.append)
    rounds = np.array([m.replaced > 0 for m in metrics])
    # Rounds during an evaluation pass would swap training rows for one-off inference rows.
    assert rounds[phases == 1].mean() <= 0.25
