"""DDPG agent (actor-critic, continuous actions in [0, 1]) as AMC/HAQ use it.

The agent is deliberately small and framework-free: actor and critic are
two-hidden-layer MLPs written in numpy with their own backward pass and Adam,
run on one BLAS thread. At these sizes (2x300 units, batch 64) this is about
ten times faster than ``train_on_batch`` on Keras models (framework dispatch
dominates; 4 ms vs 45 ms per update measured on a loaded 2-core box) and is
bit-exact reproducible, which save/resume of a search relies on. Tuners map
the [0, 1] action to their own ranges (preserve ratio, bit-width).

Example:
    >>> agent = DDPG(state_dim=10, warmup=20, sigma_decay=0.99, seed=0)
    >>> a = agent.select_action(state, episode=0)
    >>> agent.observe_episode([(state, a, next_state, True)], reward=-0.3)
    >>> agent.update()
    >>> agent.save("search/agent")  # agent.json, .weights.npz, .replay.npz
    >>> agent = DDPG.load("search/agent")
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np

from tfcomp._io import atomic_write_bytes

__all__ = ["DDPG", "ReplayBuffer"]

_FORMAT = "tfcomp.ddpg"
_VERSION = 1
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_BLAS = None


def _one_blas_thread():
    """Context limiting BLAS to one thread (threadpoolctl, if installed).

    Multi-threaded BLAS on these small matrices is many times slower on a
    shared machine.
    """
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        except ImportError:  # pragma: no cover - sklearn brings it
            _BLAS = False
    if _BLAS is False:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


class ReplayBuffer:
    """Fixed-size ring buffer of (state, action, reward, next_state, done).

    Example:
        >>> buf = ReplayBuffer(100, state_dim=3, action_dim=1)
        >>> buf.add(s, a, 0.5, s2, False)
        >>> s, a, r, s2, d = buf.sample(64, np.random.default_rng(0))
    """

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1. Received: "
                             f"capacity={capacity}")
        self.capacity = int(capacity)
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros((capacity,), np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.dones = np.zeros((capacity,), np.float32)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, state, action, reward, next_state, done) -> None:
        i = self.pos
        self.states[i] = state
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_states[i] = next_state
        self.dones[i] = float(bool(done))
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator):
        """``n`` transitions, without replacement when enough are stored."""
        if self.size == 0:
            raise ValueError("Cannot sample from an empty replay buffer.")
        idx = rng.choice(self.size, size=n, replace=self.size < n)
        return (self.states[idx], self.actions[idx], self.rewards[idx].copy(),
                self.next_states[idx], self.dones[idx])

    def to_arrays(self) -> dict:
        return {"states": self.states, "actions": self.actions,
                "rewards": self.rewards, "next_states": self.next_states,
                "dones": self.dones, "pos": np.array(self.pos),
                "size": np.array(self.size)}

    def load_arrays(self, arrays) -> None:
        for k in ("states", "actions", "rewards", "next_states", "dones"):
            v = arrays[k]
            if v.shape != getattr(self, k).shape:
                raise ValueError(
                    f"replay buffer field {k!r} has shape {v.shape}, "
                    f"expected {getattr(self, k).shape}")
            setattr(self, k, v.astype(np.float32))
        self.pos = int(arrays["pos"])
        self.size = int(arrays["size"])


def _linear(rng, fan_in, fan_out):
    """PyTorch's default Linear init, U(+-1/sqrt(fan_in)) (as AMC/HAQ)."""
    lim = 1.0 / math.sqrt(fan_in)
    return [rng.uniform(-lim, lim, (fan_in, fan_out)).astype(np.float32),
            rng.uniform(-lim, lim, (fan_out,)).astype(np.float32)]


class _Adam:
    """Adam with torch defaults over a list of numpy parameters."""

    def __init__(self, params, lr):
        self.lr = lr
        self.t = 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params, grads):
        self.t += 1
        c1 = 1.0 - _BETA1 ** self.t
        c2 = 1.0 - _BETA2 ** self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= _BETA1
            m += (1.0 - _BETA1) * g
            v *= _BETA2
            v += (1.0 - _BETA2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + _EPS)


class _Actor:
    """s -> ReLU(h1) -> ReLU(h2) -> sigmoid(action_dim)."""

    def __init__(self, rng, state_dim, action_dim, hidden):
        h1, h2 = hidden
        self.params = (_linear(rng, state_dim, h1) + _linear(rng, h1, h2)
                       + _linear(rng, h2, action_dim))

    def forward(self, s):
        w1, b1, w2, b2, w3, b3 = self.params
        z1 = s @ w1 + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2 + b2
        h2 = np.maximum(z2, 0)
        a = 1.0 / (1.0 + np.exp(-(h2 @ w3 + b3)))
        return a, (s, z1, h1, z2, h2, a)

    def backward(self, da, cache):
        _, _, w2, _, w3, _ = self.params
        s, z1, h1, z2, h2, a = cache
        dz3 = da * a * (1.0 - a)
        dz2 = (dz3 @ w3.T) * (z2 > 0)
        dz1 = (dz2 @ w2.T) * (z1 > 0)
        return [s.T @ dz1, dz1.sum(0), h1.T @ dz2, dz2.sum(0),
                h2.T @ dz3, dz3.sum(0)]


class _Critic:
    """ReLU(s W11 + b11 + a W12 + b12) -> ReLU(h2) -> Q (AMC/HAQ layout)."""

    def __init__(self, rng, state_dim, action_dim, hidden):
        h1, h2 = hidden
        self.params = (_linear(rng, state_dim, h1) + _linear(rng, action_dim,
                                                             h1)
                       + _linear(rng, h1, h2) + _linear(rng, h2, 1))

    def forward(self, s, a):
        w11, b11, w12, b12, w2, b2, w3, b3 = self.params
        z1 = s @ w11 + b11 + a @ w12 + b12
        h1 = np.maximum(z1, 0)
        z2 = h1 @ w2 + b2
        h2 = np.maximum(z2, 0)
        return h2 @ w3 + b3, (s, a, z1, h1, z2, h2)

    def backward(self, dq, cache, weights: bool = True):
        """(grads or None, dQ/da) for upstream gradient ``dq``."""
        _, _, w12, _, w2, _, w3, _ = self.params
        s, a, z1, h1, z2, h2 = cache
        dz2 = (dq @ w3.T) * (z2 > 0)
        dz1 = (dz2 @ w2.T) * (z1 > 0)
        da = dz1 @ w12.T
        if not weights:
            return None, da
        db1 = dz1.sum(0)
        return [s.T @ dz1, db1, a.T @ dz1, db1, h1.T @ dz2, dz2.sum(0),
                h2.T @ dq, dq.sum(0)], da


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}. Received: "
                         f"{name}={v!r}")


def _check_float(name, v, lo, hi, lo_open=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
        (lo < v if lo_open else lo <= v) and v <= hi)
    if not ok:
        br = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {br}{lo}, {hi}]. Received: "
                         f"{name}={v!r}")


class DDPG:
    """Deep deterministic policy gradient agent with AMC/HAQ defaults.

    Actor: state -> 300 -> 300 (ReLU) -> action_dim (sigmoid, in [0, 1]).
    Critic: ReLU(W11 s + W12 a) -> 300 (ReLU) -> Q, as in the official
    AMC/HAQ code. Target networks follow by soft updates (``tau``). Each
    ``update`` samples ``batch_size`` transitions, subtracts a moving-average
    baseline of the batch's mean reward (``baseline_alpha``; the official
    code does this at update time), fits the critic to
    r + gamma * (1 - done) * Q'(s', mu'(s')) (MSE, Adam ``critic_lr``) and
    moves the actor up Q(s, mu(s)) (Adam ``actor_lr``). Exploration:
    ``warmup`` episodes of uniform random actions, then a normal around
    mu(s) truncated to [0, 1] with
    sigma = init_sigma * sigma_decay ** (episode - warmup).

    Defaults follow HAQ/AMC (2x300, Adam 1e-4/1e-3, tau 0.01, gamma 1,
    batch 64, sigma 0.5, PyTorch's default weight init); ``warmup`` and
    ``sigma_decay`` default to AMC's 100 / 0.95 (HAQ: 20 / 0.99). The
    official code sizes the replay buffer per layer (AMC 100, HAQ 128
    transitions per layer); ``buffer_size`` is the total, set by the tuner.

    Args:
        state_dim: length of the state vector.
        action_dim: number of actions per step.
        hidden: widths of the two hidden layers.
        actor_lr, critic_lr: Adam learning rates.
        tau: soft target-update rate.
        gamma: discount.
        batch_size: transitions per update.
        buffer_size: replay capacity (oldest dropped).
        warmup: episodes of random actions before the actor acts.
        init_sigma, sigma_decay: exploration noise schedule.
        baseline_alpha: moving-average rate of the reward baseline.
        seed: seeds the weights, the exploration and the replay sampling.

    Reference: Lillicrap et al., arXiv:1509.02971, as used by AMC
    (arXiv:1802.03494) and HAQ (arXiv:1811.08886).

    Example:
        >>> agent = DDPG(state_dim=1, warmup=0, seed=0)
        >>> for episode in range(300):
        ...     a = agent.select_action([1.0], episode)
        ...     agent.observe([1.0], a, -(a[0] - 0.7) ** 2, [1.0], True)
        ...     agent.update()
        >>> agent.predict([1.0])  # close to 0.7
    """

    def __init__(self, state_dim: int, action_dim: int = 1,
                 hidden=(300, 300), actor_lr: float = 1e-4,
                 critic_lr: float = 1e-3, tau: float = 0.01,
                 gamma: float = 1.0, batch_size: int = 64,
                 buffer_size: int = 2000, warmup: int = 100,
                 init_sigma: float = 0.5, sigma_decay: float = 0.95,
                 baseline_alpha: float = 0.5, seed: int = 0):
        _check_int("state_dim", state_dim, 1)
        _check_int("action_dim", action_dim, 1)
        hidden = tuple(hidden)
        if len(hidden) != 2 or not all(
                isinstance(h, (int, np.integer)) and h >= 1 for h in hidden):
            raise ValueError(f"hidden must be two positive ints. Received: "
                             f"hidden={hidden!r}")
        _check_float("actor_lr", actor_lr, 0, 1, lo_open=True)
        _check_float("critic_lr", critic_lr, 0, 1, lo_open=True)
        _check_float("tau", tau, 0, 1, lo_open=True)
        _check_float("gamma", gamma, 0, 1)
        _check_int("batch_size", batch_size, 1)
        _check_int("buffer_size", buffer_size, 1)
        _check_int("warmup", warmup, 0)
        _check_float("init_sigma", init_sigma, 0, math.inf)
        _check_float("sigma_decay", sigma_decay, 0, 1, lo_open=True)
        _check_float("baseline_alpha", baseline_alpha, 0, 1)
        _check_int("seed", seed, 0)
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.actor_lr, self.critic_lr = float(actor_lr), float(critic_lr)
        self.tau, self.gamma = float(tau), float(gamma)
        self.batch_size, self.buffer_size = int(batch_size), int(buffer_size)
        self.warmup = int(warmup)
        self.init_sigma = float(init_sigma)
        self.sigma_decay = float(sigma_decay)
        self.baseline_alpha = float(baseline_alpha)
        self.seed = int(seed)

        init_rng = np.random.default_rng([self.seed, 1])
        self.actor = _Actor(init_rng, self.state_dim, self.action_dim,
                            self.hidden)
        self.critic = _Critic(init_rng, self.state_dim, self.action_dim,
                              self.hidden)
        self.actor_target = _Actor(init_rng, self.state_dim,
                                   self.action_dim, self.hidden)
        self.critic_target = _Critic(init_rng, self.state_dim,
                                     self.action_dim, self.hidden)
        for t, s in ((self.actor_target, self.actor),
                     (self.critic_target, self.critic)):
            t.params = [p.copy() for p in s.params]
        self.actor_opt = _Adam(self.actor.params, self.actor_lr)
        self.critic_opt = _Adam(self.critic.params, self.critic_lr)
        self.rng = np.random.default_rng(self.seed)
        self.moving_average: float | None = None
        self.num_updates = 0
        self.last_losses: dict | None = None
        self.buffer = ReplayBuffer(self.buffer_size, self.state_dim,
                                   self.action_dim)

    # -- acting ----------------------------------------------------------------
    def _state(self, state) -> np.ndarray:
        s = np.asarray(state, np.float32).reshape(1, -1)
        if s.shape[1] != self.state_dim:
            raise ValueError(f"state must have {self.state_dim} values. "
                             f"Received shape {np.shape(state)}")
        return s

    def predict(self, state) -> np.ndarray:
        """The actor's deterministic action for one state, shape (action_dim,).

        Example:
            >>> agent.predict(state)
        """
        with _one_blas_thread():
            a, _ = self.actor.forward(self._state(state))
        return a[0].astype(np.float64)

    def sigma(self, episode: int) -> float:
        """Exploration sigma at ``episode``: init * decay^(episode-warmup)."""
        return self.init_sigma * self.sigma_decay ** max(
            0, episode - self.warmup)

    def random_action(self) -> np.ndarray:
        """Uniform action in [0, 1] (warm-up episodes)."""
        return self.rng.uniform(0.0, 1.0, self.action_dim)

    def select_action(self, state, episode: int,
                      explore: bool = True) -> np.ndarray:
        """Action for ``state`` during ``episode`` (0-based).

        Episodes before ``warmup`` act uniformly at random; later ones
        sample a normal around the actor's action truncated to [0, 1].

        Args:
            state: the state vector.
            episode: episode index (sets warm-up and sigma).
            explore: False returns the actor's action without noise.

        Returns:
            ``np.ndarray`` of shape (action_dim,) in [0, 1].

        Example:
            >>> agent.select_action(state, episode=120)
        """
        _check_int("episode", episode, 0)
        if explore and episode < self.warmup:
            return self.random_action()
        mu = self.predict(state)
        if not explore:
            return mu
        sigma = self.sigma(episode)
        if sigma <= 0:
            return np.clip(mu, 0.0, 1.0)
        from scipy.stats import truncnorm

        a = truncnorm.rvs((0.0 - mu) / sigma, (1.0 - mu) / sigma, loc=mu,
                          scale=sigma, size=self.action_dim,
                          random_state=self.rng)
        return np.clip(np.asarray(a, np.float64), 0.0, 1.0)

    # -- learning ----------------------------------------------------------
    def observe(self, state, action, reward, next_state, done) -> None:
        """Stores one transition.

        Example:
            >>> agent.observe(s, a, reward, s_next, done)
        """
        s = self._state(state)[0]
        s2 = self._state(next_state)[0]
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != (self.action_dim,):
            raise ValueError(f"action must have {self.action_dim} values. "
                             f"Received shape {np.shape(action)}")
        if not math.isfinite(float(reward)):
            raise ValueError(f"reward must be finite. Received: {reward!r}")
        self.buffer.add(s, a, float(reward), s2, done)

    def observe_episode(self, transitions, reward: float) -> None:
        """Stores an episode's ``(state, action, next_state, done)`` steps,
        each with the episode's final ``reward`` (AMC/HAQ).

        Example:
            >>> agent.observe_episode(steps, reward=0.1 * (acc_q - acc))
        """
        for s, a, s2, done in transitions:
            self.observe(s, a, reward, s2, done)

    def update(self) -> dict | None:
        """One critic and one actor Adam step on a sampled batch, then soft
        target updates. Returns the losses, or None with an empty buffer.

        Example:
            >>> agent.update()
            {'value_loss': 0.01, 'policy_loss': -0.2}
        """
        if len(self.buffer) == 0:
            return None
        s, a, r, s2, done = self.buffer.sample(self.batch_size, self.rng)
        mean_r = float(np.mean(r))
        if self.moving_average is None:
            self.moving_average = mean_r
        else:
            self.moving_average += self.baseline_alpha * (
                mean_r - self.moving_average)
        r = (r - np.float32(self.moving_average))[:, None]
        n = np.float32(len(s))
        with _one_blas_thread():
            a2, _ = self.actor_target.forward(s2)
            next_q, _ = self.critic_target.forward(s2, a2)
            target = r + np.float32(self.gamma) * (1.0 - done)[:, None] * \
                next_q
            q, cache = self.critic.forward(s, a)
            err = q - target
            value_loss = float(np.mean(err * err))
            grads, _ = self.critic.backward(2.0 * err / n, cache)
            self.critic_opt.step(self.critic.params, grads)
            # Actor: ascend Q(s, mu(s)) through the updated critic.
            mu, a_cache = self.actor.forward(s)
            q_pi, c_cache = self.critic.forward(s, mu)
            policy_loss = -float(np.mean(q_pi))
            _, da = self.critic.backward(np.full_like(q_pi, -1.0 / n),
                                         c_cache, weights=False)
            self.actor_opt.step(self.actor.params,
                                self.actor.backward(da, a_cache))
            for t, src in ((self.actor_target, self.actor),
                           (self.critic_target, self.critic)):
                for tp, sp in zip(t.params, src.params):
                    tp *= 1.0 - self.tau
                    tp += self.tau * sp
        self.num_updates += 1
        self.last_losses = {"value_loss": value_loss,
                            "policy_loss": policy_loss}
        return self.last_losses

    # -- persistence -------------------------------------------------------
    def get_config(self) -> dict:
        """Every ``__init__`` argument.

        Example:
            >>> DDPG(**agent.get_config())
        """
        return {"state_dim": self.state_dim, "action_dim": self.action_dim,
                "hidden": list(self.hidden), "actor_lr": self.actor_lr,
                "critic_lr": self.critic_lr, "tau": self.tau,
                "gamma": self.gamma, "batch_size": self.batch_size,
                "buffer_size": self.buffer_size, "warmup": self.warmup,
                "init_sigma": self.init_sigma,
                "sigma_decay": self.sigma_decay,
                "baseline_alpha": self.baseline_alpha, "seed": self.seed}

    @staticmethod
    def paths(path: str) -> dict:
        """The files ``save(path)`` writes: json, weights, replay.

        Example:
            >>> DDPG.paths("run/agent")["weights"]
            'run/agent.weights.npz'
        """
        path = str(path)
        return {"json": path + ".json", "weights": path + ".weights.npz",
                "replay": path + ".replay.npz"}

    def _named_arrays(self):
        for key, obj in (("actor", self.actor),
                         ("actor_target", self.actor_target),
                         ("critic", self.critic),
                         ("critic_target", self.critic_target)):
            for i, p in enumerate(obj.params):
                yield f"{key}.{i}", p
        for key, opt in (("actor_opt", self.actor_opt),
                         ("critic_opt", self.critic_opt)):
            for i, (m, v) in enumerate(zip(opt.m, opt.v)):
                yield f"{key}.m{i}", m
                yield f"{key}.v{i}", v

    def save(self, path: str) -> dict:
        """Writes ``{path}.json``, ``{path}.weights.npz`` and
        ``{path}.replay.npz`` (each atomically; the JSON last).

        Args:
            path: file prefix, e.g. ``"search_dir/agent"``.

        Returns:
            The written paths (``DDPG.paths(path)``).

        Example:
            >>> agent.save("search_dir/agent")
        """
        files = self.paths(path)
        atomic_write_bytes(files["weights"],
                           _npz_bytes(dict(self._named_arrays())))
        atomic_write_bytes(files["replay"],
                           _npz_bytes(self.buffer.to_arrays()))
        state = {"format": _FORMAT, "version": _VERSION,
                 "config": self.get_config(), "num_updates": self.num_updates,
                 "moving_average": self.moving_average,
                 "adam_steps": {"actor": self.actor_opt.t,
                                "critic": self.critic_opt.t},
                 "rng_state": self.rng.bit_generator.state}
        atomic_write_bytes(files["json"],
                           json.dumps(state, indent=1).encode())
        return files

    @classmethod
    def load(cls, path: str) -> DDPG:
        """Restores an agent written by ``save`` (weights, Adam state,
        replay buffer, baseline and random state), so it continues exactly
        as the saved one would.

        Raises:
            FileNotFoundError: if a file is missing.
            ValueError: if the files are not a tfcomp DDPG checkpoint or are
                newer than this tfcomp.

        Example:
            >>> agent = DDPG.load("search_dir/agent")
        """
        files = cls.paths(path)
        with open(files["json"], encoding="utf-8") as f:
            try:
                state = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{files['json']} is corrupt: {e}") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{files['json']} is not a tfcomp DDPG "
                             "checkpoint.")
        if int(state.get("version", 0)) > _VERSION:
            raise ValueError(
                f"{files['json']} was written by a newer tfcomp (version "
                f"{state.get('version')}); this tfcomp reads up to "
                f"{_VERSION}.")
        agent = cls(**state["config"])
        with np.load(files["weights"]) as w:
            for name, arr in agent._named_arrays():
                if w[name].shape != arr.shape:
                    raise ValueError(
                        f"{files['weights']}: {name} has shape "
                        f"{w[name].shape}, expected {arr.shape}")
                arr[...] = w[name]
        with np.load(files["replay"]) as r:
            agent.buffer.load_arrays(r)
        agent.actor_opt.t = int(state["adam_steps"]["actor"])
        agent.critic_opt.t = int(state["adam_steps"]["critic"])
        agent.num_updates = int(state["num_updates"])
        ma = state["moving_average"]
        agent.moving_average = None if ma is None else float(ma)
        agent.rng.bit_generator.state = state["rng_state"]
        return agent
