"""``tfcomp profile MODEL``: per-layer params / MACs / bits / BOPs.

Example:
    $ tfcomp profile model.keras --json --output profile.json
    $ tfcomp profile unet.keras --input-shape 256,256,3
"""

from __future__ import annotations

import json

from tfcomp.cli import _common as common


def run(args) -> None:
    """Prints the profile table (or JSON) of ``args.model``."""
    from tfcomp.cost import profile

    if args.output:
        common.check_writable(args.output, "--output")
    bits = common.read_policy(args.policy) if args.policy else None
    model = common.load_model(args.model)
    if bits is not None:
        common.check_policy_layers(bits, model, args.policy)
    if args.input_shape:
        from tfcomp.graph.static_shape import with_input_shape

        try:
            model = with_input_shape(model, args.input_shape)
        except ValueError as e:  # a shape that does not fit the model
            raise common.CLIError(f"--input-shape: {e}") from None
    p = profile(model, bits=bits)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2, default=str))
    else:
        p.summary()
    if args.output:
        common.write_text(args.output,
                          json.dumps(p.to_dict(), indent=1, default=str))
