"""override_calls: replaced layer calls, restored exactly on exit."""

import keras
import numpy as np
import pytest

from tfcomp.graph.calls import override_calls


def _scaled(k):
    def wrap(call):
        return lambda x, *args, **kwargs: call(x, *args, **kwargs) * k
    return wrap


def _dense(name):
    layer = keras.layers.Dense(
        2, kernel_initializer="ones", bias_initializer="zeros", name=name)
    layer.build((None, 3))
    return layer


def _run(layer):
    return keras.ops.convert_to_numpy(layer(np.ones((1, 3), "float32")))


def test_restores_on_exit():
    a, b = _dense("a"), _dense("b")
    seen = []

    def recorder(call):
        def hooked(x, *args, **kwargs):
            seen.append(x)
            return call(x, *args, **kwargs)
        return hooked

    with override_calls({a: recorder, b: _scaled(10.0)}):
        assert "call" in vars(a) and "call" in vars(b)
        np.testing.assert_allclose(_run(a), [[3.0, 3.0]])
        np.testing.assert_allclose(_run(b), [[30.0, 30.0]])
        assert len(seen) == 1
    assert "call" not in vars(a) and "call" not in vars(b)
    assert a.call.__func__ is keras.layers.Dense.call
    np.testing.assert_allclose(_run(b), [[3.0, 3.0]])
    assert len(seen) == 1


def test_wrapper_gets_the_bound_call():
    a = _dense("a")
    got = []
    with override_calls({a: lambda call: got.append(call) or call}):
        pass
    assert got[0].__self__ is a and got[0].__func__ is keras.layers.Dense.call


def test_restores_on_exception():
    a, b = _dense("a"), _dense("b")
    with pytest.raises(RuntimeError, match="boom"):
        with override_calls({a: _scaled(2.0), b: _scaled(3.0)}):
            raise RuntimeError("boom")
    assert "call" not in vars(a) and "call" not in vars(b)
    np.testing.assert_allclose(_run(a), [[3.0, 3.0]])


def test_restores_when_a_wrapper_raises():
    a, b = _dense("a"), _dense("b")

    def broken(call):
        raise ValueError("no wrapper")

    with pytest.raises(ValueError, match="no wrapper"):
        with override_calls({a: _scaled(2.0), b: broken}):
            pass  # not reached
    assert "call" not in vars(a) and "call" not in vars(b)


def test_nested_use():
    a = _dense("a")
    with override_calls({a: _scaled(2.0)}):
        outer = vars(a)["call"]
        with override_calls({a: _scaled(5.0)}):
            np.testing.assert_allclose(_run(a), [[30.0, 30.0]])  # 3 * 2 * 5
        assert vars(a)["call"] is outer
        np.testing.assert_allclose(_run(a), [[6.0, 6.0]])
    assert "call" not in vars(a)
    np.testing.assert_allclose(_run(a), [[3.0, 3.0]])


def test_previous_instance_call_is_put_back():
    a = _dense("a")
    own = _scaled(-1.0)(a.call)
    a.call = own
    with pytest.raises(RuntimeError):
        with override_calls({a: _scaled(4.0)}):
            np.testing.assert_allclose(_run(a), [[-12.0, -12.0]])
            raise RuntimeError
    assert vars(a)["call"] is own
    np.testing.assert_allclose(_run(a), [[-3.0, -3.0]])


def test_plain_objects():
    class Half:
        def call(self, x):
            return x / 2

    h = Half()
    with override_calls({h: lambda call: lambda x: call(x) + 1}):
        assert h.call(4) == 3
    assert "call" not in vars(h) and h.call(4) == 2


def test_pairs_nest_two_hooks_on_one_layer_and_restore_it():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    seen = []

    def tag(name):
        def wrap(call):
            def hooked(x, *args, **kwargs):
                seen.append(name)
                return call(x, *args, **kwargs)
            return hooked
        return wrap

    x = np.ones((1, 3), "float32")
    with override_calls([(layer, tag("inner")), (layer, tag("outer"))]):
        layer(x)
    assert seen == ["outer", "inner"]
    assert "call" not in vars(layer)
    layer(x)
    assert seen == ["outer", "inner"]
