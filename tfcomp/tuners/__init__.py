"""Search agents and keras-tuner searches (AMC, HAQ).

``DDPG`` is the reinforcement-learning agent both searches share. Importing
this package does not import keras_tuner.

Example:
    >>> from tfcomp.tuners import DDPG
    >>> agent = DDPG(state_dim=10, seed=0)
"""

from tfcomp.tuners.ddpg import DDPG, ReplayBuffer

__all__ = ["DDPG", "ReplayBuffer"]
