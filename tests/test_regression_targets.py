"""Float regression targets are never read as class labels: truncated to
integers they made the accuracy-ranked searches score nonsense silently.
Verbs that rank by top-1 accuracy refuse them by name, but the AMC / HAQ /
joint searches score them by R^2 (``tfcomp._score``) and fine-tune on the
model's compiled loss; the loss-based sensitivities take them with the
model's compiled loss; the joint allocator's default selection compares
one-unit outputs by their error."""

import keras
import numpy as np
import pytest

import tfcomp
from tfcomp._io import as_arrays, class_labels
from tfcomp.hardware import BISMO

L = keras.layers


def _regressor():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(8, 3, activation="relu", name="c2")(x)
    model = keras.Model(inp, L.Dense(1, name="out")(
        L.GlobalAveragePooling2D()(x)))
    model.compile("adam", "mse")
    return model


def _data(n=48):
    rng = np.random.default_rng(0)
    return (rng.uniform(size=(n, 8, 8, 1)).astype("float32"),
            rng.normal(size=(n, 1)).astype("float32"))


def test_float_targets_are_not_class_labels():
    model, (x, y) = _regressor(), _data()
    with pytest.raises(ValueError, match="y labels hold non-integer values"):
        class_labels(y, model, "y")
    _, kept = as_arrays((x, y), model=model, targets=True)
    np.testing.assert_array_equal(kept, y)  # as float32 targets
    _, ignored = as_arrays((x, y), model=model)
    assert ignored is None  # labels not needed here: ignored
    # whole-number floats (labels saved as float32) are still classes
    assert class_labels(np.array([0.0, 2.0]), None, "y").tolist() == [0, 2]


def test_soft_class_labels_stay_classes_for_the_loss_verbs():
    """Mixup / label-smoothed rows (summing to 1) of a classifier are class
    labels, not regression targets, where targets pass through."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    clf = keras.Model(inp, L.Dense(3, activation="softmax")(inp))
    soft = np.array([[0.8, 0.1, 0.1], [0.05, 0.05, 0.9]], "float32")
    _, y = as_arrays((np.zeros((2, 4), "float32"), soft), model=clf,
                     targets=True)
    assert y.tolist() == [0, 2]


def _random_policy(seed):
    rng = np.random.default_rng(seed)
    return lambda state: float(rng.uniform())


def test_amc_scores_a_regression_model_by_r2():
    # the searches refused float targets; they score 1 - MSE / Var(y)
    from tfcomp._score import score
    from tfcomp.tuners import AMCHyperModel

    model, (x, y) = _regressor(), _data()
    hm = AMCHyperModel(model, x, (x, y), budget=0.8, round_to=1)
    assert hm.validation_data[1].dtype == np.float32
    values, _, _ = hm.space.rollout(_random_policy(0))
    metrics, _ = hm.evaluate(values)
    small, _ = hm.prune(values)
    assert metrics["accuracy"] == pytest.approx(score(small, x, y),
                                                abs=1e-4)
    assert metrics["reward"] == pytest.approx(metrics["accuracy"] - 1.0)
    perfect = np.asarray(model(x))
    assert score(model, x, perfect) == pytest.approx(1.0)


def test_haq_fine_tunes_a_regression_model_on_its_compiled_loss():
    from tfcomp.tuners import HAQHyperModel

    model, (x, y) = _regressor(), _data()
    hm = HAQHyperModel(model, (x, y), (x, y), hardware=BISMO(dm=2, dk=64, dn=2),
                       budget=0.9,
                       finetune_steps=2, batch_size=16)
    values, _, _ = hm.space.rollout(_random_policy(0))
    q = hm.build(values)
    metrics = hm.fit(values, q)
    assert q.loss == "mse" and np.isfinite(metrics["accuracy"])
    assert metrics["accuracy"] <= 1.0


def test_a_binary_classifier_is_scored_by_the_side_of_its_threshold():
    # one sigmoid unit: argmax over one unit said class 0 for every row
    from tfcomp._score import score

    keras.utils.set_random_seed(0)
    inp = keras.Input((1,))
    out = L.Dense(1, activation="sigmoid", kernel_initializer="ones",
                  bias_initializer="zeros")(inp)
    clf = keras.Model(inp, out)
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]], "float32")
    assert score(clf, x, np.array([0, 0, 1, 1])) == 1.0
    logit = keras.Model(inp, L.Dense(1, kernel_initializer="ones")(inp))
    assert score(logit, x, np.array([0, 1, 1, 1])) == 0.75


def test_loss_sensitivity_uses_the_regression_targets():
    model, (x, y) = _regressor(), _data()
    a = tfcomp.pruning.sensitivity(model, (x, y), ratios=(0.5,),
                                   method="loss", num_samples=32)
    b = tfcomp.pruning.sensitivity(model, (x, y + 5.0), ratios=(0.5,),
                                   method="loss", num_samples=32)
    assert np.all(np.isfinite(a.table))
    assert not np.allclose(a.table, b.table)  # the targets are read


def test_joint_selection_scores_a_one_unit_output_by_its_error():
    from tfcomp.joint.select import agreement

    model, (x, _) = _regressor(), _data()
    bits = {name: (8, 8) for name in ("c1", "c2", "out")}
    score = agreement(model, model, bits, x)
    assert 0.9 < score <= 1.0  # 8-bit copy of itself: nearly equal
    res = tfcomp.compress(model, x, hardware=BISMO(), budget=0.8,
                          num_samples=32, starts=1, check_gap=False)
    assert res.cost <= 0.8 + 1e-9
