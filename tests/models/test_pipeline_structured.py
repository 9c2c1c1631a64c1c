"""Every user model through the width-learning pruning methods.

For each model of ``models.CASES``, one test per step (the same outcome
recording as ``test_pipeline.py``, for the README's coverage matrix):

* ``slimmable``: ``to_slimmable(widths=(0.5, 1.0))`` equals the model at
  width 1.0; a 1-epoch sandwich-rule fit; ``export_width(0.5)`` equals the
  slimmable model at 0.5 and has fewer MACs;
* ``metapruning``: ``PruningNet`` trains 1 epoch with random widths;
  ``sample`` at half widths (BN statistics recomputed on the inputs)
  equals the PruningNet at those widths on the same inputs and has fewer
  MACs;
* ``gal_channels`` / ``gal_blocks``: ``apply_gal`` equals the model at
  masks 1; a 1-epoch ``GAL`` fit (mask step 1); with half the mask entries
  zeroed, ``strip_pruning`` leaves the outputs unchanged and removes MACs;
* ``lasso``: ``lasso_prune`` to half the channels (LASSO channel selection,
  least-squares refit on the inputs): fewer MACs, finite outputs, no group
  skipped for a transposed / grouped / 3-D convolution consumer; and one
  AMC rollout at half widths (the same engine): pruned == masked, fewer
  MACs;
* ``dcp``: ``dcp_prune`` to half the channels (user models only: too
  slow for keras.applications on a CPU; 1 SGD step, 1 head epoch;
  per-pixel auxiliary heads for per-pixel labels): fewer MACs, finite
  outputs, the same skip check;
* ``distill``: a 1-epoch ``Distiller`` fit of a fresh copy from the
  model (per-position losses for per-pixel outputs): finite loss;
* ``joint``: ``tfcomp.compress`` to 90% of the dense 8/8 BISMO latency
  (pruning and quantization sensitivities measured on the inputs): the
  point's cost is within the budget, the refit pruned model has at most
  the model's MACs and quantizes with the chosen bits.

A step either works or raises the documented clear error listed in
:data:`EXPECTED_UNSUPPORTED`; anything else fails.
"""

import keras
import numpy as np
import pytest
from test_pipeline import (
    CASE_PARAMS,
    _close,
    _compile,
    _infer,
    _np,
    _randomize_stats,
)

import tfcomp
from tfcomp.distill import Distiller
from tfcomp.graph import parse_model
from tfcomp.graph.walk import iter_leaf_layers
from tfcomp.hardware import BISMO
from tfcomp.layers.soft_mask import SoftMask
from tfcomp.pruning import (
    GAL,
    PruningNet,
    apply_gal,
    dcp_prune,
    export_width,
    lasso_prune,
    make_plan,
    set_width,
    strip_pruning,
    to_slimmable,
)
from tfcomp.quantization import quantize_model
from tfcomp.tuners.amc import AMCHyperModel

# (model, step) -> (error type, message fragment, why[, matrix rows]); rows
# () when the limit is the model's shape, not one of its layer types.
_NO_BLOCKS = "has no blocks GAL can mask"
EXPECTED_UNSUPPORTED = {
    (name, "gal_blocks"): (
        ValueError, _NO_BLOCKS,
        "no residual Add block: GAL's block masks need one", ())
    for name in ("mnist_convnet", "unet", "text_conv1d", "audio_conv1d",
                 "grouped_conv", "conv3d", "group_norm", "nested",
                 "wrapped_classifier",
                 "lambda_ops", "squeeze_excite", "conv_denoiser",
                 "image_and_metadata", "bidirectional_lstm", "conv_gru",
                 "siamese", "video_time_distributed", "next_frame_convlstm",
                 "text_attention", "text_transformer", "pointnet",
                 "deeplab_mini", "espcn", "misc_layers",
                 "DenseNet121")  # DenseNet: Concatenate skips, no Add
}
_RNN = ("LSTM / GRU / SimpleRNN / ConvLSTM",)
EXPECTED_UNSUPPORTED.update({
    ("block_class_cnn", "gal_blocks"): (
        ValueError, _NO_BLOCKS,
        "a residual sum inside your own layer class is not seen by GAL's "
        "block masks (the class is one layer to the graph)",
        ("your own Layer subclass",)),
    ("bidirectional_lstm", "slimmable"): (
        ValueError, "has nothing slimmable",
        "no slimmable recurrent layer: groups of recurrent units or read by "
        "a recurrent layer stay whole, and this model has no other", _RNN),
    ("video_time_distributed", "slimmable"): (
        ValueError, "has nothing slimmable",
        "no slimmable TimeDistributed or recurrent layer: their groups stay "
        "whole, and this model has no other",
        ("TimeDistributed", "LSTM / GRU / SimpleRNN / ConvLSTM")),
    ("next_frame_convlstm", "slimmable"): (
        ValueError, "has nothing slimmable",
        "no slimmable recurrent layer: ConvLSTM filters stay whole, and this "
        "model has no other group", _RNN),
    ("text_attention", "slimmable"): (
        ValueError, "has nothing slimmable",
        "no slimmable Embedding or attention layer: the embedding group and "
        "the query / key / value group stay whole, and this model has no "
        "other", ("Embedding", "Attention / AdditiveAttention")),
    ("next_frame_convlstm", "gal_channels"): (
        ValueError, "has no channels GAL can mask",
        "GAL's channel masks skip recurrent units (a mask on a unit's output "
        "is not a removed unit), and this model has no other group", _RNN),
    ("siamese", "dcp"): (
        ValueError, "needs every layer called exactly once",
        "DCP's greedy channel selection reads one call per layer: a nested "
        "model called twice is refused", ("nested Model",)),
    ("next_frame_convlstm", "lasso"): (
        ValueError, "needs a fully defined input shape",
        "a variable number of frames (time axis None): the AMC rollout's "
        "hardware cost model needs fixed sizes", ()),
    ("next_frame_convlstm", "joint"): (
        ValueError, "needs a fully defined input shape",
        "a variable number of frames (time axis None): the hardware cost "
        "model needs fixed sizes", ()),
    ("bidirectional_lstm", "joint"): (
        ValueError, "cannot be reached",
        "quantize_model leaves recurrent layers float, so no hardware cost "
        "model prices them: the budget counts only the Dense classifier, "
        "which cannot shrink", _RNN),
})


def _macs(model) -> int:
    return tfcomp.profile(model).macs


def check_slimmable(case):
    model = case.build()
    _randomize_stats(model)
    x, y = case.data(32)
    slim = to_slimmable(model, widths=(0.5, 1.0), inplace_distillation=False)
    set_width(slim, 1.0)
    _close(_infer(slim, x), _infer(model, x), "width 1.0 vs model")
    _compile(slim)
    slim.fit(x, y, epochs=1, batch_size=32, verbose=0)
    set_width(slim, 0.5)
    small = export_width(slim, 0.5)
    _close(_infer(small, x), _infer(slim, x), "exported width 0.5 vs slimmable")
    assert _macs(small) < _macs(model), (_macs(small), _macs(model))


def check_metapruning(case):
    model = case.build()
    x, y = case.data(32)
    net = PruningNet(model)
    _compile(net)
    net.fit(x, y, epochs=1, batch_size=32, verbose=0)
    widths = {g: max(1, n // 2) for g, n in net.sizes.items()}
    small = net.sample(widths, x, steps=1)  # BN statistics of x
    net.set_widths(widths)  # the net normalises with the batch's
    # a BatchNormalization called several times (a siamese encoder) keeps
    # one moving statistic for all its calls, while the PruningNet
    # normalises each call with its own batch: close, not equal
    parsed = parse_model(model)
    shared_bn = any(isinstance(parsed.layer(p),
                                   keras.layers.BatchNormalization)
                    for p in parsed.shared_layers)
    _close(_infer(small, x), _infer(net, x), "sampled vs PruningNet",
           tol=1e-2 if shared_bn else 1e-4)
    net.set_widths(None)
    assert _macs(small) < _macs(model), (_macs(small), _macs(model))


def check_gal(case, structures):
    model = case.build()
    _randomize_stats(model)
    x, y = case.data(32)
    student = apply_gal(model, structures=structures)
    _close(_infer(student, x), _infer(model, x), "student at masks 1 vs model")
    gal = GAL(student, model, lam=0.01, mask_step=1)
    gal.compile(keras.optimizers.SGD(1e-3), run_eagerly=True)
    gal.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.all(np.isfinite(_np(_infer(student, x)))), "student not finite"
    rng = np.random.default_rng(0)
    masks = [layer.mask for _, layer in iter_leaf_layers(student)
             if isinstance(layer, SoftMask)]
    for i, mask in enumerate(masks):
        m = _np(mask).copy()
        if m.size == 1:  # a block: every other one removed
            m[...] = float(i % 2)
        else:  # channels: about half, never a whole group
            m[rng.uniform(size=m.shape) < 0.5] = 0.0
            m.flat[0] = 1.0
        mask.assign(m)
    small = strip_pruning(student)
    _close(_infer(small, x), _infer(student, x), "stripped vs student")
    assert _macs(small) < _macs(model), (_macs(small), _macs(model))


# consumers the reconstruction engine refits (a group they read is never
# skipped because of them)
_REFIT = ("(Conv1DTranspose)", "(Conv2DTranspose)", "(Conv3DTranspose)",
          "(Conv3D)", "grouped convolution")


def _check_refit(model, res):
    """No group skipped for a consumer the engine refits; inside a nested
    model, channels are removed too when the data-free L1 plan removes some
    there (ConvNeXtTiny's nested stem / downsampling blocks feed residual
    trunks that hold LayerScale: no plan prunes them)."""
    for gid, why in res.report["skipped"].items():
        assert not any(k in why for k in _REFIT), (gid, why)
    if parse_model(model).nested and any(
            "/" in k for k in make_plan(model, ratio=0.5).removed):
        assert any("/" in k for k in res.plan.removed), res.plan.removed


def check_lasso(case):
    model = case.build()
    _randomize_stats(model)
    x, y = case.data(32)
    res = lasso_prune(model, x, ratio=0.5, max_images=16, verbose=0)
    _check_refit(model, res)
    assert np.all(np.isfinite(_np(_infer(res.model, x)))), "pruned not finite"
    assert _macs(res.model) < _macs(model), (_macs(res.model), _macs(model))
    # AMC's per-layer step (the same engine): one rollout at half widths
    hm = AMCHyperModel(model, x, (x, y), budget=1.0, round_to=1,
                       max_images=8)
    values, _, _ = hm.space.rollout(lambda s: [0.5])
    small, _ = hm.prune(values)
    _close(_infer(small, x), _infer(hm._engine().work, x), "AMC pruned vs masked")
    assert _macs(small) < _macs(model), (_macs(small), _macs(model))


def check_dcp(case):
    if case.slow:
        pytest.skip("DCP's greedy adds kept channels one at a time: "
                    "EfficientNetB0 took 7.5 min, DenseNet121 over 20 min "
                    "on this CPU; the keras.applications tier is not run")
    model = case.build()
    _randomize_stats(model)
    x, y = case.data(32)
    res = dcp_prune(model, (x, y), 0.5, finetune_epochs=0, head_epochs=1,
                    sgd_steps=1, max_images=16, verbose=0)
    _check_refit(model, res)
    assert np.all(np.isfinite(_np(_infer(res.model, x)))), "pruned not finite"
    assert _macs(res.model) < _macs(model), (_macs(res.model), _macs(model))


def check_distill(case):
    teacher = case.build()
    x, y = case.data(32)
    kd = Distiller(case.build(), teacher)
    kd.compile(keras.optimizers.Adam(1e-3), run_eagerly=True)
    hist = kd.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(hist.history["loss"]).all(), hist.history


def check_joint(case, budget=0.9):
    model = case.build()
    _randomize_stats(model)
    x, _ = case.data(32)
    res = tfcomp.compress(model, x, hardware=BISMO(), budget=budget,
                          num_samples=32, starts=1, check_gap=False)
    assert res.cost <= budget + 1e-9, res.cost
    small = res.model if res.model is not None else tfcomp.prune_channels(
        model, res.plan)
    assert _macs(small) <= _macs(model)
    q = quantize_model(small, bits=res.bits)
    assert np.all(np.isfinite(_np(_infer(q, x)))), "quantized outputs not finite"


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_slimmable(case, step):
    step(case, "slimmable", lambda: check_slimmable(case),
         EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_metapruning(case, step):
    step(case, "metapruning", lambda: check_metapruning(case),
         EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gal_channels(case, step):
    step(case, "gal_channels", lambda: check_gal(case, "channels"),
         EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_gal_blocks(case, step):
    step(case, "gal_blocks", lambda: check_gal(case, "blocks"),
         EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_joint(case, step):
    step(case, "joint", lambda: check_joint(case), EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_lasso(case, step):
    step(case, "lasso", lambda: check_lasso(case), EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_dcp(case, step):
    step(case, "dcp", lambda: check_dcp(case), EXPECTED_UNSUPPORTED)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_distill(case, step):
    step(case, "distill", lambda: check_distill(case), EXPECTED_UNSUPPORTED)
