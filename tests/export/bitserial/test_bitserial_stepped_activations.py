"""A conv's hard_sigmoid / selu / elu becomes QuantHardSigmoid / QuantSELU /
QuantELU in
QAT (an 8-bit quantizer on each intermediate tensor of its TFLite form);
the bit-serial exporter tables the layer with that rounding, so the
simulator equals the integer reference and the Keras QAT model."""

import keras
import pytest
from _exact_checks import check_exact, qat_of

from tfcomp.layers import QuantELU, QuantHardSigmoid, QuantSELU

L = keras.layers


@pytest.mark.parametrize("act, cls", [("hard_sigmoid", QuantHardSigmoid),
                                      ("selu", QuantSELU),
                                      ("elu", QuantELU)])
def test_stepped_activations_are_exact_tables(tmp_path, act, cls):
    qat, x = qat_of(lambda h: L.Conv2D(4, 3)(L.Conv2D(
        4, 3, padding="same", activation=act)(h)), (8, 8, 2))
    assert any(isinstance(layer, cls) for layer in qat.layers)
    check_exact(qat, x, tmp_path, varied=True)
