"""The ``tfcomp`` command line: profile, prune, quantize, search, export, ...

Models go in and out as ``.keras`` files; data is ``fashion-mnist`` or an
``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (for a
model with several inputs, ``x_train_<input name>`` and
``x_test_<input name>`` per InputLayer instead of ``x_train`` / ``x_test``,
e.g. ``x_train_image``, ``x_train_meta``). Every verb has ``--help``;
failures print one line ``tfcomp VERB: error: ...`` on stderr and exit
non-zero (2 for bad arguments or input, 1 for a failure inside the work).
See ``docs/CLI.md``.

One module per verb (``tfcomp.cli.prune``, ...: ``run(args)``), the
parser (every verb's options) and ``main`` in ``tfcomp.cli.app``, shared
helpers in ``tfcomp.cli._common``. The verbs only parse arguments, load files and call
the library (``tfcomp.pruning``, ``tfcomp.quantization``, ``tfcomp.tuners``,
``tfcomp.hardware``, ``tfcomp.export``, ``tfcomp.report``); none imports
Keras or TensorFlow before it runs, so ``tfcomp --help`` is instant.

Example:
    $ tfcomp profile model.keras
    $ tfcomp prune model.keras pruned.keras --method l1 --ratio 0.5
    $ tfcomp export tflite pruned.keras pruned.tflite --quantization int8 \
        --data fashion-mnist
"""

from tfcomp.cli._common import CLIError
from tfcomp.cli.app import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
