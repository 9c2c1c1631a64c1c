"""Every ```python block of README.md runs, in order, in one namespace.

The snippets use the user's own ``model`` and data (``x_train``,
``x_test``, ``x_val``, ...); the prelude below provides small synthetic
stand-ins, ``tfcomp.data.load_fashion_mnist`` returns them too and
``tfcomp.zoo.resnet`` builds a ResNet-8, so the whole README runs in
a temporary directory in a few minutes. A block
preceded by ``<!-- readme-test: skip (reason) -->`` is not run (the reason
is required).

Example:
    pytest tests/test_readme.py -s    # prints each block's time
"""

import os
import re
import time

import numpy as np
import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+?)\)\s*-->")
SHAPE = (16, 16, 1)  # the synthetic stand-in for 28x28 Fashion-MNIST
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks(text: str) -> list:
    """``(line, code, skip_reason)`` of every python block of ``text``.

    Example:
        >>> readme_blocks("```python\\nx = 1\\n```\\n")
        [(1, 'x = 1\\n', None)]
    """
    out = []
    for m in BLOCK.finditer(text):
        before = text[:m.start()].rstrip().rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        line = text.count("\n", 0, m.start()) + 1
        out.append((line, m.group(1), skip.group(1) if skip else None))
    return out


def _prelude(monkeypatch) -> dict:
    """The user's data, small and synthetic, and a small zoo ResNet."""
    import keras

    import tfcomp

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def images(n):
        x = rng.uniform(0, 1, (n, *SHAPE)).astype("float32")
        return x, rng.integers(0, 10, n).astype("int64")

    (x_train, y_train), (x_test, y_test) = images(64), images(32)
    monkeypatch.setattr(tfcomp.data, "load_fashion_mnist",
                        lambda *a, **k: ((x_train, y_train),
                                         (x_test, y_test)))
    x_val, y_val = images(32)
    resnet = tfcomp.zoo.resnet  # the README's ResNet-20 -> a ResNet-8
    monkeypatch.setattr(tfcomp.zoo, "resnet", lambda depth=20, **kw: resnet(
        depth=8, **{**kw, "input_shape": SHAPE}))
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test,
            "y_test": y_test, "x_val": x_val, "y_val": y_val,
            "x_tr": x_train, "y_tr": y_train, "x_ft": x_train,
            "y_ft": y_train, "x": x_train, "y": y_train,
            "image": x_test[:1]}


def test_blocks_are_found():
    with open(README) as f:
        blocks = readme_blocks(f.read())
    assert len(blocks) >= 8
    assert all(reason.strip() for _, _, reason in blocks if reason
               is not None)


@pytest.mark.slow
@pytest.mark.long
def test_readme_snippets_run(tmp_path, monkeypatch, capsys):
    with open(README) as f:
        blocks = readme_blocks(f.read())
    monkeypatch.chdir(tmp_path)
    namespace = _prelude(monkeypatch)
    for line, code, skip in blocks:
        if skip is not None:
            continue
        start = time.time()
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(
                f"README.md block at line {line} failed: "
                f"{type(err).__name__}: {err}") from err
        with capsys.disabled():
            print(f"\nREADME.md:{line}: {time.time() - start:.1f} s")
