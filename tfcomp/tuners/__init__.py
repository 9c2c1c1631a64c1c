"""Search agents and keras-tuner searches (AMC, HAQ, MetaPruning's evolution).

``DDPG`` is the reinforcement-learning agent both searches share. Importing
this package does not import keras_tuner; the AMC / HAQ names below are
resolved on first use (they import it).

Example:
    >>> from tfcomp.tuners import DDPG, AMCTuner, HAQTuner
    >>> agent = DDPG(state_dim=10, seed=0)
"""

from tfcomp.tuners.ddpg import DDPG, ReplayBuffer

_AMC = ("AMCHyperModel", "AMCOracle", "AMCTuner")
_HAQ = ("HAQHyperModel", "HAQOracle", "HAQTuner")
_META = ("MetaPruningOracle", "metaprune")
_JOINT = ("JointHyperModel", "JointOracle", "JointTuner")

__all__ = ["DDPG", "ReplayBuffer", *_AMC, *_HAQ, *_META, *_JOINT]


def __getattr__(name):
    # Plain imports on first use: keras_tuner is loaded only when an AMC /
    # HAQ name is asked for.
    if name in _AMC:
        from tfcomp.tuners import amc

        return getattr(amc, name)
    if name in _HAQ:
        from tfcomp.tuners import haq

        return getattr(haq, name)
    if name in _META:
        from tfcomp.tuners import metapruning

        return getattr(metapruning, name)
    if name in _JOINT:
        from tfcomp.tuners import joint

        return getattr(joint, name)
    raise AttributeError(f"module 'tfcomp.tuners' has no attribute {name!r}")
