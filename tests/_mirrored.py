"""Runs a ``tf.distribute.MirroredStrategy`` check on two logical CPUs.

TensorFlow fixes its logical devices when it initialises, and the test
process has initialised it already, so every check runs in a child python
process: :func:`run_mirrored` puts :data:`PRELUDE` (quiet Keras on the TF
backend, the CPU split into two logical devices, ``json``, ``os``, ``tf``,
``keras`` and ``np`` imported) before the check's ``body``, runs it without
GPUs and returns the JSON the body prints last.

Example:
    from _mirrored import run_mirrored

    res = run_mirrored('''
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        print(json.dumps({"replicas": strategy.num_replicas_in_sync}))
    ''')
    assert res["replicas"] == 2

(``tests/`` is on ``sys.path``: pytest puts the directory of the
rootless ``tests/conftest.py`` there.)
"""

import json
import os
import subprocess
import sys
import textwrap

PRELUDE = """\
import json, os
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
"""


def run_mirrored(body: str, env: dict | None = None,
                 timeout: float = 300) -> dict:
    """Runs ``PRELUDE + dedent(body)`` in a child python; returns the JSON
    object on the last line of its stdout.

    ``env`` adds variables to the child's environment (``CUDA_VISIBLE_DEVICES``
    is always empty). A non-zero exit fails the calling test with the tail
    of the child's stderr.
    """
    script = PRELUDE + textwrap.dedent(body)
    child_env = dict(os.environ, **(env or {}), CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", script], env=child_env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
