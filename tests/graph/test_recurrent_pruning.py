"""Recurrent layers in the dependency graph and the cost model: LSTM / GRU
/ SimpleRNN (and Bidirectional) units pruned with every gate's weights,
their inputs pruned as kernel rows, MACs per time step."""

import keras
import numpy as np
import pytest
from keras import layers

import tfcomp
from tfcomp.pruning import make_plan, mask_channels, prune_channels
from tfcomp.pruning.targets import channel_macs


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _seq_model(rnn, name="rnn", t=7, din=3, conv=True):
    keras.utils.set_random_seed(0)
    inp = keras.Input((t, din))
    h = layers.Conv1D(8, 3, padding="same", name="conv")(inp) if conv else inp
    h = rnn(h)
    return keras.Model(inp, layers.Dense(3, name="head")(h), name=name)


def _x(n=5, t=7, din=3):
    return np.random.default_rng(1).normal(size=(n, t, din)).astype("float32")


def _half(model):
    return make_plan(model, ratio=0.5, importance="l1")


RNNS = {
    "lstm": lambda: layers.LSTM(6, name="r"),
    "lstm_seq_state": lambda: layers.LSTM(6, return_sequences=True,
                                          return_state=False, name="r"),
    "gru": lambda: layers.GRU(6, name="r"),
    "gru_reset_before": lambda: layers.GRU(6, reset_after=False, name="r"),
    "simple_rnn": lambda: layers.SimpleRNN(6, name="r"),
    "rnn_of_cell": lambda: layers.RNN(layers.LSTMCell(6), name="r"),
    "bidirectional_concat": lambda: layers.Bidirectional(
        layers.LSTM(6), name="r"),
    "bidirectional_sum": lambda: layers.Bidirectional(
        layers.GRU(6), merge_mode="sum", name="r"),
}


@pytest.mark.parametrize("kind", sorted(RNNS))
def test_units_and_inputs_prune_exactly(kind):
    model = _seq_model(RNNS[kind]())
    graph = tfcomp.DependencyGraph(model)
    assert graph.group("r").size == 6 and graph.group("r").prunable
    assert graph.group("conv").prunable  # read by the kernel's rows
    plan = _half(model)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    x = _x()
    np.testing.assert_allclose(_np(pruned(x)), _np(masked(x)), atol=1e-5)
    cell_owner = pruned.get_layer("r")
    subs = ([cell_owner.forward_layer, cell_owner.backward_layer]
            if isinstance(cell_owner, layers.Bidirectional) else [cell_owner])
    for sub in subs:
        assert sub.cell.units == 3 and sub.cell.kernel.shape[0] == 4
    before, after = tfcomp.profile(model).macs, tfcomp.profile(pruned).macs
    assert after < before
    # the analytic MACs of the kept counts (the handler's macs_scale)
    # equal the pruned model's profile
    counts = {g.id: g.size // 2 for g in graph.prunable_groups}
    assert channel_macs(graph, counts) == after


def test_profile_counts_every_gate_per_step():
    model = _seq_model(layers.Bidirectional(layers.LSTM(6), name="r"))
    row = {r.name: r for r in tfcomp.profile(model).layers}["r"]
    # 7 steps x (8 inputs + 6 recurrent) x 4 gates x 6 units, two ways
    assert row.macs == 2 * 7 * (8 + 6) * 4 * 6
    gru = _seq_model(layers.GRU(5, name="r"), conv=False)
    assert {r.name: r for r in tfcomp.profile(gru).layers}["r"].macs == \
        7 * (3 + 5) * 3 * 5


def test_masked_unit_outputs_zero():
    model = _seq_model(layers.LSTM(6, return_sequences=True, name="r"))
    graph = tfcomp.DependencyGraph(model)
    masked = mask_channels(model, _half(model))
    rnn_out = keras.Model(masked.input, masked.get_layer("r").output)(_x())
    zero_units = np.all(_np(rnn_out) == 0, axis=(0, 1))
    assert zero_units.sum() == 3
    assert graph.group("r").size == 6


@pytest.mark.parametrize("rnn,reason", [
    (lambda: layers.SimpleRNN(6, activation="sigmoid", name="r"),
     "activation(0) != 0"),
    (lambda: layers.LSTM(6, activation="sigmoid", name="r"),
     "activation(0) != 0"),
])
def test_units_stay_whole_when_removal_is_not_zeroing(rnn, reason):
    model = _seq_model(rnn())
    graph = tfcomp.DependencyGraph(model)
    assert "r" not in [g.id for g in graph.prunable_groups]
    assert graph.group("conv").prunable  # its input rows still prune
    plan = _half(model)
    x = _x()
    np.testing.assert_allclose(_np(prune_channels(model, plan)(x)),
                               _np(mask_channels(model, plan)(x)), atol=1e-5)
    locks = " ".join(str(v) for g in graph.groups for v in g.reasons)
    assert reason in locks


def test_initial_state_inputs_keep_units_whole():
    keras.utils.set_random_seed(0)
    inp = keras.Input((7, 3))
    state = keras.Input((6,))
    h = layers.Conv1D(8, 3, padding="same", name="conv")(inp)
    h = layers.GRU(6, name="r")(h, initial_state=state)
    model = keras.Model([inp, state], layers.Dense(3)(h))
    graph = tfcomp.DependencyGraph(model)
    assert "r" not in [g.id for g in graph.prunable_groups]
    assert graph.group("conv").prunable


def test_stacked_bidirectional_keras_io_model(tmp_path):
    """keras.io "Bidirectional LSTM on IMDB" (variable length)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(40, 8)(inputs)
    x = layers.Bidirectional(layers.LSTM(8, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(8))(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    plan = _half(model)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    tokens = np.random.default_rng(0).integers(1, 40, (4, 11))
    np.testing.assert_allclose(_np(pruned(tokens)), _np(masked(tokens)),
                               atol=1e-5)
    # a .keras round trip of the pruned model
    pruned.save(tmp_path / "pruned.keras")
    back = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_np(back(tokens)), _np(pruned(tokens)),
                               atol=1e-6)


def test_fpgm_masks_units_and_gal_skips_them():
    """FPGM / magnitude wrap recurrent layers in their masked twins; GAL's
    channel masks skip recurrent units (a mask on a unit's output would
    not remove it: it still feeds its recurrence)."""
    model = _seq_model(layers.GRU(6, name="r"))
    soft = tfcomp.pruning.apply_fpgm(model)
    assert isinstance(soft.get_layer("r"), tfcomp.layers.MaskedGRU)
    from tfcomp.pruning.gal_sites import channel_sites
    sites, skipped = channel_sites(model)
    assert "recurrent layer 'r'" in skipped["r"]
    assert "r" in sites  # the conv group: a mask on the GRU's input rows


@pytest.mark.parametrize("bidirectional", [False, True])
def test_conv_lstm_filters_prune_exactly(bidirectional):
    """keras.io's next-frame ConvLSTM: filters are units (kernel axes -2 /
    -1), MACs count every output position."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 6, 6, 2))
    h = layers.ConvLSTM2D(6, 3, padding="same", return_sequences=True,
                          name="c1")(inp)
    h = layers.BatchNormalization(name="bn")(h)
    last = layers.ConvLSTM2D(4, 3, padding="same", name="c2")
    h = (layers.Bidirectional(last, name="c2") if bidirectional else last)(h)
    model = keras.Model(inp, layers.Conv2D(1, 3, padding="same",
                                           name="head")(h))
    rows = {r.name: r.macs for r in tfcomp.profile(model).layers}
    # 4 steps x 36 positions x 9 taps x (din + filters) x 4 gates x filters
    assert rows["c1"] == 4 * 36 * 9 * (2 + 6) * 4 * 6
    assert rows["c2"] == (2 if bidirectional else 1) * 4 * 36 * 9 * (
        6 + 4) * 4 * 4
    graph = tfcomp.DependencyGraph(model)
    assert graph.group("c1").prunable and graph.group("c2").prunable
    plan = _half(model)
    pruned, masked = prune_channels(model, plan), mask_channels(model, plan)
    x = np.random.default_rng(1).normal(size=(3, 4, 6, 6, 2)).astype(
        "float32")
    np.testing.assert_allclose(_np(pruned(x, training=False)),
                               _np(masked(x, training=False)), atol=1e-5)
    assert pruned.get_layer("c1").cell.filters == 3
    after = tfcomp.profile(pruned).macs
    counts = {g.id: g.size // 2 for g in graph.prunable_groups}
    assert channel_macs(graph, counts) == after < tfcomp.profile(model).macs


def test_conv_lstm_channels_first_is_a_barrier():
    inp = keras.Input((3, 2, 5, 5))
    h = layers.ConvLSTM2D(4, 3, data_format="channels_first", name="c")(inp)
    graph = tfcomp.DependencyGraph(keras.Model(inp, layers.Flatten()(h)))
    assert "channels_first" in graph.group("c").reason
