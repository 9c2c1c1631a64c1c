"""DDPG agent: determinism, save/load, exploration and learning."""

import json

import numpy as np
import pytest

from tfcomp.tuners import DDPG, ReplayBuffer


def _bandit(agent, episodes, state=(1.0, 0.5), start=0):
    for ep in range(start, start + episodes):
        a = agent.select_action(state, ep)
        agent.observe(state, a, -10.0 * (a[0] - 0.7) ** 2, state, True)
        if ep >= agent.warmup:
            agent.update()


def test_learns_one_step_bandit_peaked_at_0_7():
    agent = DDPG(state_dim=2, warmup=10, sigma_decay=0.98, buffer_size=500,
                 seed=0)
    _bandit(agent, 310)
    assert agent.num_updates == 300
    assert abs(agent.predict([1.0, 0.5])[0] - 0.7) < 0.05


def test_same_seed_same_agent_and_different_seed_differs():
    s = np.linspace(0, 1, 4)
    a, b, c = (DDPG(state_dim=4, warmup=0, seed=k) for k in (3, 3, 4))
    assert np.array_equal(a.predict(s), b.predict(s))
    assert not np.array_equal(a.predict(s), c.predict(s))
    for agent in (a, b):
        _bandit(agent, 20, state=s)
    assert np.array_equal(a.predict(s), b.predict(s))
    assert a.select_action(s, 25).tolist() == b.select_action(s, 25).tolist()


def test_save_load_gives_identical_actions(tmp_path):
    state = [0.2, 0.9]
    agent = DDPG(state_dim=2, warmup=5, buffer_size=100, seed=7)
    _bandit(agent, 40, state=state)
    files = agent.save(str(tmp_path / "agent"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agent.json", "agent.replay.npz", "agent.weights.npz"]
    loaded = DDPG.load(str(tmp_path / "agent"))
    assert loaded.get_config() == agent.get_config()
    assert len(loaded.buffer) == len(agent.buffer) == 40
    # Same deterministic and exploring actions (random state restored) ...
    assert np.array_equal(loaded.predict(state), agent.predict(state))
    for ep in (41, 42, 60):
        assert np.array_equal(loaded.select_action(state, ep),
                              agent.select_action(state, ep))
    # ... and the same continuation of training (Adam state, baseline, rng).
    assert loaded.update() == agent.update()
    _bandit(agent, 5, state=state, start=61)
    _bandit(loaded, 5, state=state, start=61)
    assert np.array_equal(loaded.predict(state), agent.predict(state))
    with open(files["json"]) as f:
        assert json.load(f)["format"] == "tfcomp.ddpg"


def test_load_errors(tmp_path):
    agent = DDPG(state_dim=1, seed=0)
    files = agent.save(str(tmp_path / "a"))
    meta = tmp_path / "a.json"
    assert files["json"] == str(meta)
    doc = json.loads(meta.read_text())
    doc["version"] = 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="newer tfcomp"):
        DDPG.load(str(tmp_path / "a"))
    meta.write_text("{oops")
    with pytest.raises(ValueError, match="corrupt"):
        DDPG.load(str(tmp_path / "a"))
    with pytest.raises(FileNotFoundError):
        DDPG.load(str(tmp_path / "missing"))


def test_exploration_schedule_and_bounds():
    agent = DDPG(state_dim=3, warmup=10, init_sigma=0.5, sigma_decay=0.9,
                 seed=1)
    assert agent.sigma(0) == agent.sigma(10) == 0.5
    assert agent.sigma(12) == pytest.approx(0.5 * 0.81)
    s = [0.1, 0.2, 0.3]
    warm = np.array([agent.select_action(s, 0)[0] for _ in range(200)])
    assert warm.min() >= 0 and warm.max() <= 1 and warm.std() > 0.2
    late = np.array([agent.select_action(s, 10)[0] for _ in range(300)])
    mu = agent.predict(s)[0]
    assert late.min() >= 0 and late.max() <= 1
    assert abs(np.median(late) - mu) < 0.15
    assert np.array_equal(agent.select_action(s, 50, explore=False),
                          agent.predict(s))


def test_baseline_and_update_losses():
    agent = DDPG(state_dim=1, warmup=0, batch_size=4, buffer_size=8,
                 baseline_alpha=0.5, seed=0)
    assert agent.update() is None  # empty buffer
    for r in (1.0, 1.0, 1.0, 1.0):
        agent.observe([0.0], [0.5], r, [0.0], True)
    losses = agent.update()
    assert set(losses) == {"value_loss", "policy_loss"}
    assert agent.moving_average == pytest.approx(1.0)
    for _ in range(8):
        agent.observe([0.0], [0.5], 3.0, [0.0], True)  # ring buffer wraps
    assert len(agent.buffer) == 8 and agent.buffer.pos == 4
    agent.update()
    assert agent.moving_average == pytest.approx(2.0)  # 1 + 0.5 * (3 - 1)


def test_replay_buffer_sampling():
    buf = ReplayBuffer(5, state_dim=2, action_dim=1)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2, np.random.default_rng(0))
    for i in range(3):
        buf.add([i, i], [i / 10], i, [i, i], False)
    s, _, r, _, _ = buf.sample(8, np.random.default_rng(0))
    assert s.shape == (8, 2) and set(r.tolist()) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("kwargs, match", [
    ({"state_dim": 0}, "state_dim must be"),
    ({"tau": 0.0}, "tau must be in"),
    ({"hidden": (300,)}, "hidden must be"),
    ({"sigma_decay": 1.5}, "sigma_decay must be in"),
    ({"seed": -1}, "seed must be"),
])
def test_argument_validation(kwargs, match):
    args = {"state_dim": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DDPG(**args)
    agent = DDPG(state_dim=2)
    with pytest.raises(ValueError, match="state must have 2 values"):
        agent.predict([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="reward must be finite"):
        agent.observe([0, 0], [0.5], float("nan"), [0, 0], True)
