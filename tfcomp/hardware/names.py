"""Hardware models by name: the one resolver of the ``hardware=`` argument.

``get_hardware("bismo")`` is ``BISMO()``, ``"bitfusion"`` (or
``"bitfusion-edge"``) ``BitFusion("edge")``, ``"bitfusion-server"``
``BitFusion("server")``, and a path ending in ``.json`` a saved
:class:`~tfcomp.hardware.LatencyTable`; a ``HardwareModel`` (or None) is
returned as it is. The Python API (``compress``, ``allocate_bits``,
``CostTable``, ``policy_cost``) and the ``--hardware`` option of the CLI
resolve through it.

Example:
    >>> type(get_hardware("bitfusion")).__name__
    'BitFusion'
"""

from __future__ import annotations

import os

from tfcomp.hardware.base import HardwareModel
from tfcomp.hardware.bismo import BISMO
from tfcomp.hardware.bitfusion import BitFusion
from tfcomp.hardware.latency_table import LatencyTable

__all__ = ["HARDWARE_NAMES", "get_hardware"]

HARDWARE_NAMES = ("bismo", "bitfusion", "bitfusion-edge", "bitfusion-server")
_FACTORIES = {"bismo": BISMO, "bitfusion": lambda: BitFusion("edge"),
              "bitfusion-edge": lambda: BitFusion("edge"),
              "bitfusion-server": lambda: BitFusion("server")}


def get_hardware(spec, argument: str = "hardware"):
    """The hardware model ``spec`` names (module doc).

    Args:
        spec: None, a ``HardwareModel`` / ``LatencyTable``, one of
            :data:`HARDWARE_NAMES`, or a latency table ``.json`` path.
        argument: the argument's name in error messages.

    Raises:
        ValueError: an unknown name, or an unreadable table file.
        FileNotFoundError: a ``.json`` path that does not exist.
        TypeError: anything else.

    Example:
        >>> get_hardware(BISMO()).name == get_hardware("bismo").name
        True
    """
    if spec is None or isinstance(spec, HardwareModel):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text in _FACTORIES:
            return _FACTORIES[text]()
        if text.endswith(".json"):
            if not os.path.isfile(text):
                raise FileNotFoundError(
                    f"{argument}: latency table not found. Received: "
                    f"{argument}={text!r}")
            return LatencyTable.load(text)
        raise ValueError(
            f"{argument} must be one of {HARDWARE_NAMES}, a latency table "
            f".json path or a HardwareModel. Received: {argument}={text!r}")
    raise TypeError(
        f"{argument} must be None, a HardwareModel (BISMO(), BitFusion()), "
        f"a LatencyTable, one of {HARDWARE_NAMES} or a .json path. "
        f"Received: {argument}={spec!r}")
