"""The contextual bandit of paper 001 (qoeflow/lifecycle/bandit.py, bandit_sim.py, deployment.py): incremental
Eqs. 6–7 equal a batch solve, ratings arrive exactly when due, the baselines score what a tiny problem's
answer says, the learner approaches the Oracle, peers from other libraries run on the same stream, bad input
is refused, and `qoeflow bandit --paper` writes a checked summary."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qoeflow.lifecycle import bandit_peers
from qoeflow.lifecycle.bandit import (LMMSE, DelayedLinUCB, FeedbackQueue, Oracle, Policy, Rating, Static, Uniform,
                                      batch_lmmse, paper_noise_variance)
from qoeflow.lifecycle.bandit_sim import (PaperSetup, PaperStream, Round, Stream, bounds, evaluate, normalised_average,
                                          paper_policies, regret, run)
from qoeflow.lifecycle.deployment import FEATURES, DeploymentStream, Population, Variant

THETA = np.array([-0.5, 0.37, -0.36, 0.69])


def observations(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 4))
    delays = rng.integers(1, 41, n)
    variances = np.array([paper_noise_variance(int(d)) for d in delays])
    y = x @ THETA + rng.normal(0, 1, n) * np.sqrt(variances)
    return x, y, variances


@pytest.mark.parametrize("refresh", [4096, 1_000_000])  # with the periodic Cholesky solve, and rank-one updates only
def test_incremental_estimate_equals_the_batch_solve_of_eq_6_after_10000_rounds(refresh):
    x, y, v = observations(10_000)
    est = LMMSE(4, delta=0.1, refresh=refresh)
    for i in range(len(y)):
        est.add(x[i], y[i], v[i])
    theta, cov = batch_lmmse(x, y, v, 0.1)
    np.testing.assert_allclose(est.theta, theta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.cov, cov, rtol=1e-8, atol=1e-15)
    precision, weighted = est.statistics()
    np.testing.assert_allclose(precision, 0.1 * np.eye(4) + (x / v[:, None]).T @ x, rtol=1e-10)


def test_the_estimate_before_any_rating_is_the_prior():
    est = LMMSE(3, delta=0.5)
    np.testing.assert_array_equal(est.theta, np.zeros(3))
    np.testing.assert_allclose(est.cov, np.eye(3) / 0.5)


def test_ucb_scores_are_eq_8():
    x, y, v = observations(50)
    policy = DelayedLinUCB(4, alpha=1.5, delta=0.1)
    for i in range(50):
        policy.update(Rating(x[i], float(y[i]), int(round(math.sqrt(5 / (v[i] - 0.4)))), 0))
    theta, cov = batch_lmmse(x, y, v, 0.1)
    arms = np.random.default_rng(1).uniform(0, 1, (7, 4))
    expected = arms @ theta + 1.5 * np.sqrt(np.einsum("ij,jk,ik->i", arms, cov, arms))
    np.testing.assert_allclose(policy.scores(arms), expected, rtol=1e-9)
    assert policy.choose(arms, np.arange(7)) == int(np.argmax(expected))


def test_the_queue_releases_each_rating_exactly_at_its_round():
    q = FeedbackQueue()
    q.push(3, Rating(np.zeros(2), 1.0, 4, 0))
    q.push(5, Rating(np.zeros(2), 2.0, 2, 1))
    q.push(5, Rating(np.zeros(2), 3.0, 0, 2))
    assert [r.reward for r in q.arrived(5)] == [3.0]
    assert [r.reward for r in q.arrived(6)] == []
    assert sorted(r.reward for r in q.arrived(7)) == [1.0, 2.0]
    assert q.pending == 0


class Recorder(Policy):
    """Chooses arm 0 and remembers when each rating arrived."""

    name = "recorder"

    def __init__(self):
        self.now, self.arrivals = 0, []

    def choose(self, contexts, arms):
        self.now += 1
        return 0

    def update(self, rating):
        self.arrivals.append((self.now, rating))


def test_the_loop_delivers_each_rating_delay_rounds_after_its_choice_with_the_rounds_noise():
    setup = PaperSetup(rounds=300, arms=3)
    stream = PaperStream(setup, seed=4)
    rounds = list(stream)
    policy = Recorder()
    run(policy, stream)
    made = {}
    for t, r in enumerate(rounds):
        made[t] = r
    seen = 0
    for chosen_so_far, rating in policy.arrivals:
        # the rating arrives before the choice of round `chosen_so_far`, i.e. in round chosen_so_far (0-based)
        origin = chosen_so_far - rating.delay
        r = made[origin]
        assert rating.delay == r.delay
        np.testing.assert_array_equal(rating.context, r.contexts[0])
        assert rating.reward == pytest.approx(r.expected[0] + r.noise)
        seen += 1
    assert seen == sum(1 for t, r in made.items() if t + r.delay < setup.rounds)


def test_linucb_chooses_at_random_until_the_first_rating_arrives():
    stream = PaperStream(PaperSetup(rounds=60, max_delay=40), seed=0)
    first_due = min(t + r.delay for t, r in enumerate(stream))
    policy = DelayedLinUCB(4, seed=0)
    trace = run(policy, stream)
    replay = np.random.default_rng(0).integers(10, size=first_due)
    np.testing.assert_array_equal(trace.arms[:first_due], replay)


class Swapped(Stream):
    """Two arms whose contexts swap every round; θ = [1, 0]: the best arm alternates, each arm is best half
    the time. Arm 1 is missing in every third round."""

    dim, rounds = 2, 12

    def __iter__(self):
        for t in range(self.rounds):
            contexts = np.array([[1.0, 0.0], [0.0, 1.0]]) if t % 2 == 0 else np.array([[0.0, 1.0], [1.0, 0.0]])
            keep = [0] if t % 3 == 2 else [0, 1]
            yield Round(contexts[keep], np.array(keep), contexts[keep] @ np.array([1.0, 0.0]), 0.0, 1)


def test_baselines_on_a_tiny_problem_with_a_known_answer():
    stream = Swapped()
    b = bounds(stream)
    oracle = run(Oracle(np.array([1.0, 0.0])), stream)
    # the Oracle earns 1 whenever arm 0 alone is offered or two arms are: everywhere but in rounds where arm 0
    # alone is offered with context [0, 1] (t % 3 == 2 and t odd: t = 5, 11)
    assert oracle.earned.tolist() == [0.0 if t in (5, 11) else 1.0 for t in range(12)]
    np.testing.assert_array_equal(oracle.earned, b.best)
    # hindsight: arm 0 earns 1 in even rounds (6), arm 1 in odd rounds where offered (t = 1, 3, 7, 9): Static
    # prefers arm 0, and arm 0 is offered in every round
    assert b.static_preference() == [0, 1]
    static = run(Static(b.static_preference()), stream)
    assert static.arms.tolist() == [0] * 12
    # Static earns 6, the Oracle 10, the worst arm 2 (arm 0 alone, with [1, 0], at t = 2 and 8): (6 − 2) / (10 − 2)
    assert b.worst.sum() == 2.0
    assert normalised_average(static.earned, oracle.earned, b.worst)[-1] == pytest.approx(0.5)
    assert regret(static.earned, oracle.earned)[-1] == pytest.approx(4.0)
    assert normalised_average(oracle.earned, oracle.earned, b.worst)[-1] == 1.0


def test_static_falls_back_when_its_model_is_not_offered():
    static = Static([5, 2, 9])
    assert static.choose(np.zeros((3, 2)), np.array([9, 2, 7])) == 1
    assert static.choose(np.zeros((2, 2)), np.array([9, 7])) == 0
    assert static.choose(np.zeros((1, 2)), np.array([7])) == 0


def test_on_the_papers_setting_linucb_approaches_the_oracle_and_beats_static():
    setup = PaperSetup()
    b, traces = evaluate(PaperStream(setup, seed=1), paper_policies(setup, seed=1))
    by = {t.name: t for t in traces}
    final = {n: normalised_average(t.earned, by["oracle"].earned, b.worst)[-1] for n, t in by.items()}
    assert final["oracle"] == 1.0
    assert final["linucb"] >= 0.9
    assert final["static"] < final["linucb"] - 0.2
    assert np.linalg.norm(by["linucb"].policy.theta - THETA) <= 0.25


@pytest.mark.parametrize("name", bandit_peers.PEERS)
def test_peer_linucbs_learn_from_the_same_delayed_stream(name):
    setup = PaperSetup(rounds=400, arms=4)
    stream = PaperStream(setup, seed=2)
    b = bounds(stream)
    oracle = run(Oracle(np.asarray(setup.theta)), stream)
    peer = run(bandit_peers.make(name, setup.arms, alpha=1.0, seed=2), stream)
    rand = run(Uniform(2), stream)
    score = lambda t: normalised_average(t.earned, oracle.earned, b.worst)[-1]  # noqa: E731
    assert score(peer) > score(rand) + 0.1
    with pytest.raises(ValueError, match="arm ids"):
        bandit_peers.make(name, 2).choose(np.zeros((1, 4)), np.array([5]))


def test_bad_input_is_refused():
    policy = DelayedLinUCB(4)
    policy.update(Rating(np.ones(4), 1.0, 3, 0))
    with pytest.raises(ValueError, match="4"):
        policy.choose(np.ones((3, 5)), np.arange(3))
    with pytest.raises(ValueError, match="finite"):
        policy.choose(np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0]]), np.arange(2))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="reward must be finite"):
            policy.update(Rating(np.ones(4), bad, 3, 0))
    with pytest.raises(ValueError, match="delay"):
        FeedbackQueue().push(0, Rating(np.ones(4), 1.0, -2, 0))
    with pytest.raises(ValueError, match="delay"):
        paper_noise_variance(0)
    with pytest.raises(ValueError, match="alpha"):
        DelayedLinUCB(4, alpha=-0.1)
    with pytest.raises(ValueError, match="delta"):
        DelayedLinUCB(4, delta=0.0)
    with pytest.raises(ValueError, match="features"):
        LMMSE(4).add(np.ones(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="bandit"):
        bandit_peers.make("vowpal", 3)


VARIANTS = [Variant("big", 0.99, 12e6, 8e4, 10, 300, 0.8, 3.3e5), Variant("mid", 0.97, 5e6, 3e4, 7, 140, 0.4, 1.4e5),
            Variant("tiny", 0.83, 1e6, 1e4, 4, 60, 0.2, 6.6e4), Variant("bad", 0.10, 4e6, 3e4, 7, 100, 0.45, 1.7e5)]


def test_the_deployment_stream_replays_offers_what_fits_and_the_oracle_knows_its_expectation():
    stream = DeploymentStream(VARIANTS, Population(), rounds=3000, seed=3)
    first, again = list(stream), list(stream)
    assert all(np.array_equal(a.contexts, b.contexts) and a.noise == b.noise for a, b in zip(first, again))
    offered = [len(r.arms) for r in first]
    assert min(offered) >= 1 and max(offered) == len(VARIANTS) and min(offered) < len(VARIANTS)
    assert all(r.contexts.shape == (len(r.arms), len(FEATURES)) for r in first)
    residual = np.concatenate([r.expected - r.contexts @ stream.theta for r in first])
    assert abs(residual.mean()) < 0.05  # the Oracle's θ is the QoE's expectation over users given the context


def test_population_defaults_are_the_params_defaults():
    from qoeflow.params import PopulationParams

    given = {k: tuple(v) if isinstance(v, list) else v for k, v in PopulationParams().model_dump().items()}
    assert Population(**given) == Population()


def test_qoeflow_bandit_paper_writes_a_checked_summary_and_figure(tmp_path, monkeypatch):
    from qoeflow.cli import main
    from tasks.catalog import kind_of

    monkeypatch.chdir(tmp_path)
    assert main(["bandit", "--paper", "--seeds", "2", "-o", "out"]) == 0
    summary = kind_of("bandit_summary").load(tmp_path / "out" / "summary.json", "summary.json")
    kind_of("bandit_figure").load(tmp_path / "out" / "figure.png", "figure.png")
    methods = summary["methods"]
    assert summary["setup"]["theta"] == list(THETA) and summary["seeds"] == 2
    assert set(methods) == {"linucb", "oracle", "random", "static"}  # no peer unless asked for
    assert methods["oracle"]["normalised_qoe"]["mean"] == 1.0
    assert methods["linucb"]["normalised_qoe"]["mean"] > methods["static"]["normalised_qoe"]["mean"]
    assert methods["linucb"]["theta"]["distance"]["max"] < 0.3
    assert main(["bandit", "--paper", "--seeds", "0"]) == 2


def test_a_summary_whose_oracle_is_not_1_is_refused(tmp_path):
    from qoeflow.validate import ArtifactError
    from tasks.catalog import kind_of

    spread = {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}
    method = {"normalised_qoe": spread, "regret": spread, "seconds": spread, "curve": [0.5]}
    doc = {"mode": "paper", "seeds": 1, "rounds": [1], "methods": {n: method for n in ("linucb", "oracle", "static")}}
    with pytest.raises(ArtifactError, match="oracle"):
        kind_of("bandit_summary").save(doc, tmp_path / "s.json", "s.json")
