"""Search agents and keras-tuner searches (AMC, HAQ).

``DDPG`` is the reinforcement-learning agent both searches share. Importing
this package does not import keras_tuner; the AMC / HAQ names below are
resolved on first use (they import it).

Example:
    >>> from tfcomp.tuners import DDPG, AMCTuner, HAQTuner
    >>> agent = DDPG(state_dim=10, seed=0)
"""

import importlib

from tfcomp.tuners.ddpg import DDPG, ReplayBuffer

_LAZY = {
    "AMCHyperModel": "tfcomp.tuners.amc", "AMCOracle": "tfcomp.tuners.amc",
    "AMCTuner": "tfcomp.tuners.amc", "HAQHyperModel": "tfcomp.tuners.haq",
    "HAQOracle": "tfcomp.tuners.haq", "HAQTuner": "tfcomp.tuners.haq",
}

__all__ = ["DDPG", "ReplayBuffer", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfcomp.tuners' has no attribute {name!r}")
