"""``tfcomp lut build MODEL OUTPUT``: hardware latency lookup tables.

Example:
    $ tfcomp lut build model.keras bismo.json --hardware bismo --bits 2-8
    $ tfcomp lut build model.keras host.json --hardware tflite
"""

from __future__ import annotations

from tfcomp.cli import _common as common


def run(args) -> None:
    """Builds and saves a LatencyTable for ``args.model``."""
    from tfcomp import hardware

    common.check_output(args.output, ".json", "table")
    model = common.load_model(args.model)
    kw = {"progress": not common.is_quiet()}
    if args.channel_fractions is not None:
        kw["channel_fractions"] = args.channel_fractions
    if args.channel_multiple is not None:
        kw["channel_multiple"] = args.channel_multiple
    if args.hardware == "tflite":
        common.info("measuring single-layer TFLite models on this host")
        table = hardware.measure_tflite_table(
            model, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
            threads=args.threads, **kw)
    else:
        hw = common.hardware_model(args.hardware)
        common.info(f"tabulating {args.hardware} over {len(args.bits)} "
                    "bit-widths")
        table = hardware.LatencyTable.build(model, hw, bits=args.bits, **kw)
    table.save(args.output)
    try:
        ms = f"{table.model_cost(model).latency_s * 1e3:.4f} ms"
    except (ValueError, KeyError):  # e.g. 8/8 not tabulated
        ms = None
    where = ("measured" if table.bit_invariant
             else "at its own bits, 8/8 for float layers")
    print(f"{len(table)} entries" + ("" if ms is None else
                                     f"; model latency {ms} ({where})"))
    print(f"wrote {args.output}")
