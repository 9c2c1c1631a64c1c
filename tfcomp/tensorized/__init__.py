"""Tensorized networks: T-Net (one shared Tucker tensor for the convs of a
fully convolutional net) and its conversion back to plain convs.

Example:
    >>> from tfcomp.tensorized import tnet, to_dense
    >>> tn = tnet(model, ranks=0.25)       # train with tn.fit(...)
    >>> dense = to_dense(tn)               # for export_tflite
"""

from tfcomp.tensorized.tnet import TNET_MODES, shareable_convs, tnet, to_dense

__all__ = ["tnet", "to_dense", "shareable_convs", "TNET_MODES"]
