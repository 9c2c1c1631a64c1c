"""Settings, data and trained baselines of ``benchmarks/search.py``.

The CPU-scale settings are module attributes read at call time by
``_search_amc``, ``_search_haq`` and ``_search_report`` (``import
_search_setup as cfg``), so ``use_quick_settings`` (``--quick``) changes
them for every part. The paper defaults are in ``search.py``'s docstring.

Example:
    >>> import _search_setup as cfg
    >>> data = cfg.load_data()
    >>> model, info = cfg.baseline(data)  # trained once, then cached
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from _common import accuracy as _accuracy
from _common import compile_model, log

import tfcomp
from tfcomp._io import atomic_path

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tfcomp", "search")

# ---- CPU-scale settings (paper defaults: search.py's docstring) -------
SEED = 0
TRAIN_N = 20000          # baseline: first 20k training images
TRAIN_EPOCHS = 4
VAL = (50000, 53000)     # held-out training images: AMC search rewards
HAQ_VAL = (50000, 60000)  # held-out training images: HAQ search rewards
CAL_N = 128              # AMC least-squares calibration images
FT_N = 5000              # AMC fine-tune: 1 epoch on these images
FT_SEEDS = (0, 1, 2)     # the fine-tune is repeated (data order) and averaged
TEST_N = 10000           # final accuracies: the whole test set
BUDGET = 0.5
AMC_EPISODES, AMC_WARMUP = 60, 15
RS_TRIALS = BO_TRIALS = 30
BO_INITIAL = 10
LAT_EPISODES, LAT_WARMUP = 40, 10
LAT_FRACTIONS = tuple(k / 8 for k in range(1, 9))
HAQ_EPISODES, HAQ_WARMUP = 100, 20   # warm-up as the paper
# exploration noise 0.5 * decay^(episode - warm-up) reaches 0.05 at the last
# episode (the paper decays by 0.99 over 580 episodes, to ~0.0015)
HAQ_SIGMA_DECAY = 0.1 ** (1 / (HAQ_EPISODES - HAQ_WARMUP))
HAQ_STEPS = 40           # fine-tune batches (of 128) per HAQ trial: one
#                          epoch of the FT_N images, as the paper
HAQ_WIDTHS = (4, 5, 6)
HAQ_AT = 4               # HAQ searches at the latency of uniform 4-bit
HAQ_LONG_STEPS = 300     # the longer QAT fine-tune of the found policies
MBV2_ALPHA = 0.5         # HAQ on the paper's own model: MobileNetV2-tiny
MBV2_EPISODES, MBV2_WARMUP = 100, 20
PARTS = ("pruning", "haq", "haq_long", "mbv2", "mbv2_rescore",
         "mbv2_long", "mbv2_at5", "mbv2_at5_long")
AT5_HARDWARE = ("bismo",)  # on Bit Fusion uniform 5-bit costs as 8/8
RESCORE_TOP_K = 5        # HAQTuner.rescore: best trials re-evaluated

# --quick: 2-3 trials each (a smoke test of every part, not a result)
QUICK = dict(AMC_EPISODES=3, RS_TRIALS=3, BO_TRIALS=3, LAT_EPISODES=3,
             AMC_WARMUP=2, LAT_WARMUP=2, BO_INITIAL=2, HAQ_EPISODES=1,
             HAQ_WARMUP=1, FT_N=500, HAQ_WIDTHS=(4,), MBV2_EPISODES=1,
             MBV2_WARMUP=1, HAQ_LONG_STEPS=5, RESCORE_TOP_K=1,
             HAQ_STEPS=4)


def use_quick_settings() -> None:
    """Sets the ``QUICK`` values on this module (``HAQ_SIGMA_DECAY`` keeps
    the full run's value, as it always has)."""
    globals().update(QUICK)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy, predicted in batches of 500."""
    return _accuracy(model, x, y, batch_size=500)


# ---------------------------------------------------------------------------
# data and baseline


def load_data():
    (x, y), (xt, yt) = tfcomp.data.load_fashion_mnist()
    return {
        "pool": (x, y),  # all 60k training images: held-out splits
        "train": (x[:TRAIN_N], y[:TRAIN_N]),
        "val": (x[VAL[0]:VAL[1]], y[VAL[0]:VAL[1]]),
        "cal": x[:CAL_N],
        "ft": (x[:FT_N], y[:FT_N]),
        "test": (xt[:TEST_N], yt[:TEST_N]),
    }


def baseline(data, retrain: bool = False, arch: str = "resnet20"):
    """The trained ResNet-20 or MobileNetV2 (``arch="mobilenet_v2"``,
    ``MBV2_ALPHA``), trained once, then loaded from the cache."""
    os.makedirs(CACHE, exist_ok=True)
    tag = "resnet20" if arch == "resnet20" else f"mbv2_{MBV2_ALPHA}"
    path = os.path.join(CACHE, f"{tag}_fmnist_{TRAIN_N}x{TRAIN_EPOCHS}"
                        f"_s{SEED}.weights.h5")
    keras.utils.set_random_seed(SEED)
    model = (tfcomp.zoo.resnet(depth=20) if arch == "resnet20"
             else tfcomp.zoo.mobilenet_v2(alpha=MBV2_ALPHA))
    info = {"path": path, "cached": os.path.exists(path) and not retrain}
    if info["cached"]:
        model.load_weights(path)
        info["train_seconds"] = 0.0
    else:
        log(f"training the {arch} baseline ({TRAIN_EPOCHS} epochs on "
            f"{TRAIN_N})")
        t0 = time.time()
        x, y = data["train"]
        compile_model(model, keras.optimizers.Adam(1e-3))
        model.fit(x, y, batch_size=128, epochs=TRAIN_EPOCHS, shuffle=True,
                  verbose=2)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            model.save_weights(tmp)
        info["train_seconds"] = time.time() - t0
    info["test_accuracy"] = accuracy(model, *data["test"])
    info["val_accuracy"] = accuracy(model, *data["val"])
    info["macs"] = tfcomp.profile(model).macs
    info["params"] = int(model.count_params())
    log(f"{arch} baseline test accuracy {info['test_accuracy']:.4f}")
    return model, info
