"""Binary ensembles (BENN): bagging / boosting of binary networks.

Example:
    >>> from tfcomp.binary import BENN, binary_net
    >>> benn = BENN(lambda: binary_net((28, 28, 1), 10), members=3)
    >>> benn.fit(x, y, epochs=1).model.predict(x[:4])
"""

from tfcomp.binary.benn import BENN, binary_net, samme_update
from tfcomp.binary.fold import fold_binary_batchnorm
from tfcomp.binary.vote import EnsembleVote

__all__ = ["BENN", "EnsembleVote", "binary_net", "fold_binary_batchnorm",
           "samme_update"]
