"""``tfcomp report [RESULTS.json]``: report.md + PNG plots.

Example:
    $ tfcomp report results.json --model dense=model.keras \
        --model pruned=pruned.keras --data fashion-mnist --output report
"""

from __future__ import annotations

import os

from tfcomp.cli import _common as common


def _measured(args) -> dict:
    """Results collected from ``--model`` / ``--tflite`` / ``--lut``."""
    from tfcomp import report

    models = {}
    for text in args.model:
        label, path = common.label_path(text, "--model")
        models[label] = common.load_model(path)
    tflite = {}
    for text in args.tflite:
        label, path = common.label_path(text, "--tflite")
        if not os.path.isfile(path):
            raise common.CLIError(f"tflite file not found: {path!r}")
        tflite[label] = path
    unknown = sorted(set(tflite) - set(models))
    if unknown:
        raise common.CLIError(f"--tflite labels {unknown} match no --model "
                              f"label ({sorted(models)})")
    first = next(iter(models.values()), None)
    data = common.load_data(args.data, required=False, model=first)
    table = common.hardware_model(args.lut) if args.lut else None
    common.info(f"collecting results for {len(models)} model(s)")
    return report.collect_results(
        models, data=None if data is None else data[1], tflite=tflite,
        table=table, num_images=args.num, runs=args.runs)


def run(args) -> None:
    """Writes ``report.md`` and its plots into ``args.output``."""
    from tfcomp import report

    if args.results is None and not args.model:
        raise common.CLIError("give a results .json or at least one "
                              "--model LABEL=FILE.keras")
    common.check_folder(args.output, "--output")
    results = {"rows": []}
    if args.results is not None:
        if not os.path.isfile(args.results):
            raise common.CLIError(
                f"results file not found: {args.results!r}")
        try:
            results = report.load_results(args.results)
        except ValueError as e:
            raise common.CLIError(str(e)) from e
    if args.model or args.lut:
        results = report.merge_results(results, _measured(args))
    path = report.write_report(results, args.output, title=args.title)
    print(f"wrote {path}")
