"""DNAS on a hardware's native widths: ``build_supernet(hardware=...)``
searches only ``hardware.distinct_bits()`` (``bits="all"``: every
candidate)."""

import keras
import pytest

from tfcomp.hardware import BISMO, BitFusion
from tfcomp.quantization import dnas


def _model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inp, out)


def _cands(sn):
    (layer,) = dnas.mixed_layers(sn)
    return [tuple(int(b) for b in c) for c in layer.candidates]


CANDS = [(2, 4), (3, 4), (5, 8), (6, 6), (8, 8)]


def test_native_candidates_snap_up_and_dedupe():
    assert dnas.native_candidates(CANDS, BitFusion()) == [
        (2, 4), (4, 4), (8, 8)]
    assert dnas.native_candidates(CANDS, BitFusion(), "all") == CANDS
    assert dnas.native_candidates(CANDS, None) == CANDS
    assert dnas.native_candidates(CANDS, BISMO()) == CANDS  # 1..8 native


def test_supernet_searches_native_widths_by_default():
    sn = dnas.build_supernet(_model(), candidates=CANDS, hardware=BitFusion())
    assert _cands(sn) == [(2, 4), (4, 4), (8, 8)]
    sn = dnas.build_supernet(_model(), candidates=CANDS, hardware=BitFusion(),
                             bits="all")
    assert _cands(sn) == CANDS
    sn = dnas.build_supernet(_model())  # no hardware: the paper's default
    assert _cands(sn) == list(dnas.DEFAULT_CANDIDATES)
    sn = dnas.build_supernet(_model(), hardware=BitFusion())
    assert set(_cands(sn)) <= {(w, a) for w in (2, 4, 8) for a in (2, 4, 8)}


def test_native_candidates_errors():
    class Narrow:
        name = "narrow"

        def distinct_bits(self):
            return (2, 4)

    with pytest.raises(ValueError, match="bits must be 'native' or 'all'"):
        dnas.native_candidates(CANDS, BitFusion(), bits="some")
    with pytest.raises(TypeError, match="distinct_bits"):
        dnas.build_supernet(_model(), hardware="bitfusion")
    with pytest.raises(ValueError, match="width 8 is above"):
        dnas.native_candidates([(8, 8)], Narrow())
