"""The ``tfcomp`` command line: profile, prune, quantize, search, export, ...

Models go in and out as ``.keras`` files; data is ``fashion-mnist`` or an
``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test``. Every
verb has ``--help``; failures print one line ``tfcomp VERB: error: ...`` on
stderr and exit non-zero (2 for bad arguments or input, 1 for a failure
inside the work). See ``docs/CLI.md``.

The verbs only parse arguments, load files and call the library
(``tfcomp.pruning``, ``tfcomp.quantization``, ``tfcomp.tuners``,
``tfcomp.hardware``, ``tfcomp.export``, ``tfcomp.report``).

Example:
    $ tfcomp profile model.keras
    $ tfcomp prune model.keras pruned.keras --method l1 --ratio 0.5
    $ tfcomp export tflite pruned.keras pruned.tflite --quantization int8 \
        --data fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

__all__ = ["CLIError", "build_parser", "main"]

_PRUNE_METHODS = ("l1", "l2", "fpgm", "bn_scale", "random", "taylor",
                  "lasso", "dcp")
_HARDWARE = ("bitfusion-edge", "bitfusion-server", "bismo")
_QUIET = False


class CLIError(Exception):
    """An error reported to the user as one line (exit code 2)."""


# ---------------------------------------------------------------- helpers


def _info(msg: str) -> None:
    """Progress / status line on stderr (silenced by ``--quiet``)."""
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    """A warning on stderr (shown even with ``--quiet``)."""
    print(f"tfcomp: warning: {msg}", file=sys.stderr, flush=True)


def _verbose() -> int:
    return 0 if _QUIET else 1


def _atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-"
                       + os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _check_output(path: str, suffix: str, what: str = "output") -> None:
    if not path.endswith(suffix):
        raise CLIError(f"{what} must end in {suffix}. Received: {path!r}")


def _load_model(path: str):
    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path!r}")
    if not path.endswith(".keras"):
        raise CLIError(f"model must be a .keras file. Received: {path!r}")
    import keras

    import tfcomp.layers  # noqa: F401  (registers tfcomp's layers)

    _info(f"loading {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # corrupt zip, unknown layer, ...
        raise CLIError(f"cannot load model {path!r}: "
                       f"{type(e).__name__}: {e}") from e


def _save_model(model, path: str) -> None:
    _check_output(path, ".keras", "output model")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-"
                       + os.path.basename(path))
    model.save(tmp)
    os.replace(tmp, path)
    print(f"wrote {path}")


def _load_data(spec: str | None, required: bool = True, model=None):
    """``((x, y), (x_test, y_test))`` from ``fashion-mnist`` or a ``.npz``."""
    from tfcomp import data

    if spec is None:
        if required:
            raise CLIError("this command needs --data fashion-mnist|FILE.npz")
        return None
    if spec in ("fashion-mnist", "fashion_mnist"):
        loader = data.load_fashion_mnist
        args = ()
    elif spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise CLIError(f"data file not found: {spec!r}")
        loader, args = data.load_npz, (spec,)
    else:
        raise CLIError("--data must be 'fashion-mnist' or a path ending in "
                       f".npz. Received: {spec!r}")
    _info(f"loading data {spec}")
    try:
        (x, y), (xt, yt) = loader(*args)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise CLIError(str(e)) from e
    import numpy as np

    y, yt = np.asarray(y).astype("int64"), np.asarray(yt).astype("int64")
    if len(x) != len(y) or len(xt) != len(yt) or len(x) == 0:
        raise CLIError(
            f"data {spec!r}: x/y lengths must match and be > 0. Received: "
            f"x_train {len(x)}, y_train {len(y)}, x_test {len(xt)}, "
            f"y_test {len(yt)}")
    if model is not None:
        want = tuple(model.inputs[0].shape[1:])
        for name, arr in (("x_train", x), ("x_test", xt)):
            got = tuple(arr.shape[1:])
            if len(got) != len(want) or any(
                    w is not None and w != g for w, g in zip(want, got)):
                raise CLIError(
                    f"data {spec!r}: {name} images have shape {got} but "
                    f"the model expects {want}")
    return (x, y), (xt, yt)


def _evaluate(model, x, y) -> float:
    import numpy as np

    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.asarray(logits).argmax(-1) == y))


def _from_logits(model) -> bool:
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", "") != "softmax"


def _fit(model, x, y, epochs: int, lr: float, batch_size: int,
         steps: int | None = None) -> None:
    """Fine-tunes with Adam and the Keras progress bar."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=_from_logits(model)),
        metrics=["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs,
              steps_per_epoch=steps, verbose=_verbose())


def _hardware(spec: str):
    """A HardwareModel from a name or a LatencyTable JSON path."""
    from tfcomp import hardware

    if spec == "bismo":
        return hardware.BISMO()
    if spec in ("bitfusion", "bitfusion-edge"):
        return hardware.BitFusion("edge")
    if spec == "bitfusion-server":
        return hardware.BitFusion("server")
    if spec.endswith(".json"):
        if not os.path.isfile(spec):
            raise CLIError(f"latency table not found: {spec!r}")
        try:
            return hardware.LatencyTable.load(spec)
        except (ValueError, OSError) as e:
            raise CLIError(f"cannot read latency table {spec!r}: {e}") from e
    raise CLIError(f"--hardware must be one of {', '.join(_HARDWARE)} or a "
                   f"latency table .json. Received: {spec!r}")


def _parse_bits_list(text: str) -> list:
    """``"2-8"`` or ``"2,4,8"`` -> list of ints."""
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            out = list(range(lo, hi + 1))
        else:
            out = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must look like 2-8 or 2,4,8. Received: {text!r}") from None
    if not out or any(not 1 <= b <= 8 for b in out):
        raise argparse.ArgumentTypeError(
            f"bits must be in [1, 8]. Received: {text!r}")
    return out


def _read_policy(path: str) -> dict:
    """``{layer: (w_bits, a_bits)}`` from a JSON policy file."""
    if not os.path.isfile(path):
        raise CLIError(f"policy file not found: {path!r}")
    try:
        with open(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise CLIError(f"policy {path!r} is not valid JSON: {e}") from e
    if isinstance(doc, dict) and isinstance(doc.get("policy"), dict):
        doc = doc["policy"]
    if not isinstance(doc, dict) or not doc:
        raise CLIError(f"policy {path!r} must be a non-empty JSON object "
                       "{layer: [w_bits, a_bits]}")
    out = {}
    for name, v in doc.items():
        if isinstance(v, int) and not isinstance(v, bool):
            v = [v, v]
        if (not isinstance(v, list) or len(v) != 2 or not all(
                isinstance(b, int) and not isinstance(b, bool) for b in v)):
            raise CLIError(f"policy {path!r}: layer {name!r} must map to "
                           f"[w_bits, a_bits]. Received: {v!r}")
        out[str(name)] = (v[0], v[1])
    return out


# ---------------------------------------------------------------- verbs


def cmd_profile(args) -> None:
    from tfcomp.cost import profile

    model = _load_model(args.model)
    bits = _read_policy(args.policy) if args.policy else None
    p = profile(model, bits=bits)
    if args.json:
        print(json.dumps(p.to_dict(), indent=2, default=str))
    else:
        p.summary()
    if args.output:
        _atomic_write_text(args.output,
                           json.dumps(p.to_dict(), indent=1, default=str))
        print(f"wrote {args.output}")


def cmd_prune(args) -> None:
    from tfcomp import pruning
    from tfcomp.cost import profile

    _check_output(args.output, ".keras", "output model")
    given = sum(v is not None for v in (args.ratio, args.target_macs,
                                        args.apply_plan))
    if given != 1:
        raise CLIError("give exactly one of --ratio, --target-macs or "
                       "--apply-plan")
    if args.target_macs is not None and args.target_macs <= 0:
        raise CLIError("--target-macs must be > 0 (a fraction in (0, 1] or a "
                       f"MACs count). Received: {args.target_macs}")
    model = _load_model(args.model)
    needs_data = args.method in ("lasso", "dcp", "taylor") and (
        args.apply_plan is None)
    data = _load_data(args.data, required=needs_data, model=model)
    n = args.calibration_size
    kwargs = ({"ratio": args.ratio} if args.ratio is not None
              else {"target_macs": args.target_macs})
    if args.apply_plan is not None:
        if not os.path.isfile(args.apply_plan):
            raise CLIError(f"plan file not found: {args.apply_plan!r}")
        plan = pruning.Plan.load(args.apply_plan)
        _info(f"applying plan {args.apply_plan}")
        pruned = pruning.prune_channels(model, plan)
    elif args.method == "lasso":
        _info("LASSO channel selection + least-squares refit")
        x = data[0][0][:n]
        pruned, plan = pruning.lasso_prune(
            model, x, **kwargs, max_images=n, seed=args.seed,
            verbose=_verbose())
    elif args.method == "dcp":
        _info("discrimination-aware channel pruning (DCP)")
        xy = (data[0][0][:n], data[0][1][:n])
        pruned, plan = pruning.dcp_prune(
            model, xy, **kwargs, max_images=n, seed=args.seed,
            num_stages=args.dcp_stages, head_epochs=args.dcp_head_epochs,
            finetune_epochs=args.dcp_stage_epochs, verbose=_verbose())
    else:
        xy = None if data is None else (data[0][0][:n], data[0][1][:n])
        plan = pruning.make_plan(
            model, ratio=args.ratio if args.ratio is not None else 0.0,
            importance=args.method, round_to=args.round_to,
            target_macs=args.target_macs, data=xy, seed=args.seed)
        pruned = pruning.prune_channels(model, plan)
    if data is not None and args.finetune_epochs > 0:
        _info(f"fine-tuning {args.finetune_epochs} epoch(s)")
        _fit(pruned, data[0][0], data[0][1], args.finetune_epochs, args.lr,
             args.batch_size)
    _save_model(pruned, args.output)
    if args.plan:
        _atomic_write_text(args.plan, plan.to_json(indent=1))
        print(f"wrote {args.plan}")
    before, after = profile(model).macs, profile(pruned).macs
    print(f"MACs {before:,} -> {after:,} ({after / max(before, 1):.1%})")
    if data is not None:
        (_, _), (xt, yt) = data
        print(f"test accuracy: {_evaluate(model, xt, yt):.4f} -> "
              f"{_evaluate(pruned, xt, yt):.4f}")


def cmd_quantize(args) -> None:
    from tfcomp import quantization

    _check_output(args.output, ".keras", "output model")
    if args.bits is not None and args.policy:
        raise CLIError("give --bits or --policy, not both")
    if args.epochs > 0 and not args.data:
        raise CLIError("--epochs (QAT fine-tune) needs --data")
    bits: object = 8 if args.bits is None else args.bits
    if args.policy:
        bits = _read_policy(args.policy)
    model = _load_model(args.model)
    data = _load_data(args.data, required=False, model=model)
    qat = quantization.quantize_model(model, bits=bits)
    rep = getattr(qat, "quantization_report", None)
    if rep is not None and not _QUIET:
        print(rep.summary())
    if data is None:
        _warn("no --data: activation ranges are not calibrated (give "
              "--data before int8 / bit-serial export)")
    else:
        (x, y), (xt, yt) = data
        _info(f"calibrating on {min(len(x), args.calibration_size)} images")
        quantization.calibrate(qat, x[:args.calibration_size])
        if args.epochs > 0:
            _info(f"QAT fine-tuning {args.epochs} epoch(s)")
            _fit(qat, x, y, args.epochs, args.lr, args.batch_size,
                 args.steps_per_epoch)
        print(f"test accuracy: float {_evaluate(model, xt, yt):.4f}, "
              f"quantized {_evaluate(qat, xt, yt):.4f}")
    _save_model(qat, args.output)


def _is_qat(model) -> bool:
    from tfcomp.quantization import is_qat_model

    return bool(is_qat_model(model))


def cmd_export(args) -> None:
    if args.format == "tflite":
        from tfcomp.export import export_tflite, measure_latency

        _check_output(args.output, ".tflite")
        model = _load_model(args.model)
        needs = args.quantization == "int8" and not _is_qat(model)
        if needs and not args.data:
            raise CLIError("--quantization int8 of a float model needs "
                           "--data for calibration (or quantize it first)")
        data = _load_data(args.data, required=False, model=model)
        rep_data = None if data is None else data[0][0][:500]
        verify = None if data is None else data[1][0][:args.verify]
        _info(f"converting to TFLite ({args.quantization or 'float32'}) "
              "and verifying")
        report = export_tflite(model, args.output,
                               quantization=args.quantization,
                               representative_data=rep_data,
                               verify=args.verify > 0, verify_data=verify,
                               num_verify=max(args.verify, 1))
        out = report.to_dict()
        if args.latency:
            _info("measuring latency")
            lat = measure_latency(args.output, runs=args.runs)
            out["latency_median_ms"] = lat.median_ms
        print(json.dumps(out, indent=2, default=str))
        print(f"wrote {args.output}")
    else:
        from tfcomp.export import export_bitserial

        _check_output(args.output, ".json", "descriptor")
        model = _load_model(args.model)
        if not _is_qat(model):
            raise CLIError(
                "export bitserial needs a quantized model (run `tfcomp "
                f"quantize` first). Received: {args.model!r}")
        data = _load_data(args.data, required=False, model=model)
        calib = None if data is None else data[0][0][:256]
        verify_x = None if data is None else data[1][0][:args.verify]
        _info(f"writing {args.target} descriptor"
              + ("" if verify_x is None else " and simulating it"))
        report = export_bitserial(model, args.output, target=args.target,
                                  calibration_x=calib, verify_x=verify_x,
                                  verify=verify_x is not None
                                  and args.verify > 0)
        print(json.dumps(report.to_dict(), indent=2, default=str))
        print(f"wrote {args.output}")


def cmd_simulate(args) -> None:
    import numpy as np

    from tfcomp.export import simulate_bitserial

    if not os.path.isfile(args.descriptor):
        raise CLIError(f"descriptor not found: {args.descriptor!r}")
    try:
        with open(args.descriptor) as f:
            batch = int(json.load(f).get("batch", 1))
    except (json.JSONDecodeError, AttributeError, TypeError,
            ValueError) as e:
        raise CLIError(f"{args.descriptor!r} is not a descriptor JSON: "
                       f"{e}") from e
    model = _load_model(args.model) if args.model else None
    (_, _), (xt, yt) = _load_data(args.data, model=model)
    n = (min(args.num, len(xt)) // batch) * batch
    if n == 0:
        raise CLIError(f"need at least batch={batch} test images. Received: "
                       f"--num {args.num} ({len(xt)} available)")
    x, y = xt[:n], yt[:n]
    _info(f"simulating {n} images bit-serially")
    out, stats = simulate_bitserial(args.descriptor, x, return_stats=True,
                                    dequantize=True)
    pred = np.asarray(out).reshape(n, -1).argmax(-1)
    acc = float(np.mean(pred == y))
    result = {"images": n, "top1_accuracy": acc,
              "compute_cycles": int(stats.compute_cycles)}
    print(f"bit-serial simulator: top-1 {acc:.4f} on {n} test images")
    if model is not None:
        ref = _evaluate_logits(model, x).argmax(-1)
        agree = float(np.mean(pred == ref))
        result["top1_agreement"] = agree
        print(f"top-1 agreement with {args.model}: {agree:.4f}")
    if args.json:
        print(json.dumps(result))


def _evaluate_logits(model, x):
    import numpy as np

    return np.asarray(model.predict(x, batch_size=256, verbose=0)).reshape(
        len(x), -1)


def cmd_lut(args) -> None:
    from tfcomp import hardware

    _check_output(args.output, ".json", "table")
    model = _load_model(args.model)
    kw = {}
    if args.channel_fractions is not None:
        kw["channel_fractions"] = args.channel_fractions
    if args.channel_multiple is not None:
        kw["channel_multiple"] = args.channel_multiple
    if args.hardware == "tflite":
        _info("measuring single-layer TFLite models on this host")
        table = hardware.measure_tflite_table(
            model, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
            threads=args.threads, progress=not _QUIET, **kw)
    else:
        hw = _hardware(args.hardware)
        _info(f"tabulating {args.hardware} over {len(args.bits)} bit-widths")
        table = hardware.LatencyTable.build(model, hw, bits=args.bits,
                                            progress=not _QUIET, **kw)
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


def _split(data, val_size: int):
    (x, y), (xt, yt) = data
    v = min(val_size, len(x))
    return (x, y), (x[-v:], y[-v:]), (xt, yt)


def _best_trial(tuner):
    trials = tuner.oracle.get_best_trials(1)
    if not trials:
        raise CLIError("no trial finished (see the messages above)")
    return trials[0]


def cmd_search(args) -> None:
    _check_output(args.output, ".keras", "output model")
    if args.trials < 1:
        raise CLIError(f"--trials must be >= 1. Received: {args.trials}")
    if not 0 < args.budget <= 1:
        raise CLIError(f"--budget must be in (0, 1]. Received: {args.budget}")
    model = _load_model(args.model)
    data = _load_data(args.data, model=model)
    (x, y), val, test = _split(data, args.val_size)
    oracle_kw = {} if args.warmup is None else {"warmup": args.warmup}
    if args.algorithm == "amc":
        from tfcomp.tuners.amc import AMCHyperModel, AMCTuner

        cost = args.cost or "macs"
        if cost not in ("macs", "latency"):
            raise CLIError("search amc --cost must be macs or latency. "
                           f"Received: {cost!r}")
        hw = _hardware(args.hardware) if cost == "latency" else None
        hm = AMCHyperModel(model, x[:args.calibration_size], val,
                           target=cost, budget=args.budget, hardware=hw,
                           round_to=args.round_to, seed=args.seed,
                           max_images=args.calibration_size)
        tuner = AMCTuner(hm, max_trials=args.trials, seed=args.seed,
                         directory=args.directory, project_name="amc",
                         overwrite=args.overwrite, **oracle_kw)
        _info(f"AMC search: {args.trials} trial(s), budget {args.budget} of "
              f"dense {cost}, {len(hm.group_ids)} group(s)")
        tuner.search(verbose=_verbose())
        best = _best_trial(tuner)
        result, plan = hm.prune(best.hyperparameters)
        if args.plan:
            _atomic_write_text(args.plan, plan.to_json(indent=1))
            print(f"wrote {args.plan}")
    else:
        from tfcomp.tuners.haq import HAQHyperModel, HAQTuner

        cost = args.cost or "latency"
        if cost not in ("latency", "energy", "size", "bops"):
            raise CLIError("search haq --cost must be latency, energy, size "
                           f"or bops. Received: {cost!r}")
        hw = _hardware(args.hardware) if cost in ("latency",
                                                  "energy") else None
        hm = HAQHyperModel(model, (x, y), val, hardware=hw, target=cost,
                           budget=args.budget,
                           calibration_data=x[:args.calibration_size],
                           finetune_epochs=args.finetune_epochs,
                           finetune_steps=args.finetune_steps,
                           seed=args.seed)
        tuner = HAQTuner(hm, max_trials=args.trials, seed=args.seed,
                         directory=args.directory, project_name="haq",
                         overwrite=args.overwrite, **oracle_kw)
        _info(f"HAQ search: {args.trials} trial(s), budget {args.budget} of "
              f"8-bit {cost}, {len(hm.searched_layers)} searched layer(s)")
        tuner.search(verbose=_verbose())
        best = _best_trial(tuner)
        policy = hm.policy(best.hyperparameters)
        result = hm.quantized_model(best.hyperparameters)
        hm.fit(best.hyperparameters, result)
        if args.plan:
            _atomic_write_text(args.plan, json.dumps(
                {k: list(v) for k, v in policy.items()}, indent=1))
            print(f"wrote {args.plan}")
    metrics = {k: float(v.get_best_value())
               for k, v in best.metrics.metrics.items()}
    print("best trial: " + json.dumps(metrics, sort_keys=True))
    print(f"test accuracy of the best model: "
          f"{_evaluate(result, *test):.4f}")
    _save_model(result, args.output)


def cmd_report(args) -> None:
    from tfcomp import report

    if args.results is None and not args.model:
        raise CLIError("give a results .json or at least one --model "
                       "LABEL=FILE.keras")
    results = {"rows": []}
    if args.results is not None:
        if not os.path.isfile(args.results):
            raise CLIError(f"results file not found: {args.results!r}")
        results = report.load_results(args.results)
    if args.model or args.lut:
        models = {}
        for label, path in (_label_path(s, "--model") for s in args.model):
            models[label] = _load_model(path)
        tflite = {}
        for label, path in (_label_path(s, "--tflite") for s in args.tflite):
            if not os.path.isfile(path):
                raise CLIError(f"tflite file not found: {path!r}")
            tflite[label] = path
        unknown = sorted(set(tflite) - set(models))
        if unknown:
            raise CLIError(f"--tflite labels {unknown} match no --model "
                           f"label ({sorted(models)})")
        first = next(iter(models.values()), None)
        data = _load_data(args.data, required=False, model=first)
        table = _hardware(args.lut) if args.lut else None
        _info(f"collecting results for {len(models)} model(s)")
        extra = report.collect_results(
            models, data=None if data is None else data[1],
            tflite=tflite, table=table, num_images=args.num,
            runs=args.runs)
        results = report.merge_results(results, extra)
    path = report.write_report(results, args.output, title=args.title)
    print(f"wrote {path}")


def _label_path(text: str, flag: str) -> tuple[str, str]:
    if "=" in text:
        label, path = text.split("=", 1)
    else:
        path = text
        label = os.path.splitext(os.path.basename(path))[0]
    if not label or not path:
        raise CLIError(f"{flag} must be LABEL=PATH. Received: {text!r}")
    return label, path


# ---------------------------------------------------------------- parser


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number in [0, 1). Received: {text!r}") from None
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(
            f"must be in [0, 1). Received: {text}")
    return v


def _fractions(text: str) -> tuple:
    try:
        out = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers in (0, 1]. Received: "
            f"{text!r}") from None
    if not out or any(not 0 < f <= 1 for f in out):
        raise argparse.ArgumentTypeError(
            f"fractions must be in (0, 1]. Received: {text!r}")
    return out


def _int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi] (no upper bound if None)."""
    what = "an integer" if hi is None else f"an integer in [{lo}, {hi}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {what}. Received: {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(
                f"must be {bound}. Received: {v}")
        return v

    return parse


_positive_int = _int_in(1)
_nonneg_int = _int_in(0)
_bits = _int_in(1, 8)


_DATA_HELP = "fashion-mnist or FILE.npz (x_train, y_train, x_test, y_test)"


def build_parser() -> argparse.ArgumentParser:
    """The ``tfcomp`` argument parser (one sub-parser per verb)."""
    from tfcomp import __version__

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="tfcomp",
        description="Model compression for Keras 3: profile, prune, "
                    "quantize, search, build latency tables, export, "
                    "simulate and report. Models are .keras files.",
        epilog="Run `tfcomp COMMAND --help` for a command's options.")
    p.add_argument("--version", action="version",
                   version=f"tfcomp {__version__}")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress output (results still printed)")
    p.add_argument("--traceback", action="store_true",
                   help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "profile", formatter_class=fmt,
        help="per-layer params / MACs / bits / BOPs table",
        description="Print a per-layer table of params, MACs, weight and "
                    "activation bits and BOPs.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--policy", help="JSON {layer: [w_bits, a_bits]} to "
                   "profile the model at these bits")
    s.add_argument("--output", help="also write the profile JSON here")
    s.set_defaults(func=cmd_profile)

    s = sub.add_parser(
        "prune", formatter_class=fmt, help="structured channel pruning",
        description="Remove channels (physically smaller model). Give "
                    "exactly one of --ratio, --target-macs, --apply-plan.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--method", default="l1", choices=_PRUNE_METHODS,
                   help="importance criterion, or lasso / dcp "
                        "(reconstruction methods; need --data)")
    s.add_argument("--ratio", type=_ratio,
                   help="fraction of channels removed per group, in [0, 1)")
    s.add_argument("--target-macs", type=float,
                   help="MACs budget: a fraction of the dense MACs in "
                        "(0, 1] or an absolute count")
    s.add_argument("--apply-plan", metavar="PLAN.json",
                   help="replay a saved plan (from prune --plan or search "
                        "amc --plan) instead of choosing channels")
    s.add_argument("--round-to", type=_positive_int, default=1,
                   help="kept channel counts are multiples of this "
                        "(l1/l2/fpgm/bn_scale/random/taylor)")
    s.add_argument("--data", help=_DATA_HELP + "; needed by lasso, dcp, "
                   "taylor; with it test accuracy is printed")
    s.add_argument("--calibration-size", type=_positive_int, default=512,
                   help="training images used for selection")
    s.add_argument("--dcp-stages", type=_positive_int, default=3,
                   help="dcp: stages with an auxiliary loss")
    s.add_argument("--dcp-head-epochs", type=_nonneg_int, default=3,
                   help="dcp: epochs fitting each auxiliary head")
    s.add_argument("--dcp-stage-epochs", type=_nonneg_int, default=1,
                   help="dcp: per-stage fine-tune epochs")
    s.add_argument("--finetune-epochs", type=_nonneg_int, default=0,
                   help="fine-tune the pruned model (needs --data)")
    s.add_argument("--lr", type=float, default=1e-3,
                   help="fine-tune learning rate (Adam)")
    s.add_argument("--batch-size", type=_positive_int, default=128,
                   help="fine-tune batch size")
    s.add_argument("--plan", help="also write the plan JSON here")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of random / lasso / dcp")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser(
        "quantize", formatter_class=fmt,
        help="quantization-aware (QAT) model, uniform or per-layer bits",
        description="Wrap conv / dense layers with fake-quantized QAT "
                    "layers; calibrate on --data and optionally fine-tune.")
    s.add_argument("model", help="input .keras file")
    s.add_argument("output", help="output .keras file")
    s.add_argument("--bits", type=_bits, default=None,
                   help="uniform weight/activation bits in [1, 8] (first "
                        "and last layers stay 8); default 8")
    s.add_argument("--policy", help="JSON {layer: [w_bits, a_bits]} (e.g. "
                   "from search haq --plan); unlisted layers get 8/8")
    s.add_argument("--data", help=_DATA_HELP + "; calibrates activation "
                   "ranges and reports accuracy")
    s.add_argument("--epochs", type=_nonneg_int, default=0,
                   help="QAT fine-tune epochs (0 = calibrate only)")
    s.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                   help="limit the batches per fine-tune epoch")
    s.add_argument("--lr", type=float, default=1e-4,
                   help="QAT fine-tune learning rate (Adam)")
    s.add_argument("--batch-size", type=_positive_int, default=128,
                   help="QAT fine-tune batch size")
    s.add_argument("--calibration-size", type=_positive_int, default=512,
                   help="training images for activation ranges")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser(
        "search", formatter_class=fmt,
        help="AMC (channels) or HAQ (bits) search with keras-tuner",
        description="Run tfcomp.tuners' AMC or HAQ keras-tuner search and "
                    "save the best model. Validation images are the last "
                    "--val-size training images; test accuracy is printed.")
    s.add_argument("algorithm", choices=["amc", "haq"])
    s.add_argument("model", help="input (trained) .keras file")
    s.add_argument("output", help="output .keras file (best found)")
    s.add_argument("--data", default="fashion-mnist", help=_DATA_HELP)
    s.add_argument("--trials", type=_positive_int, default=20,
                   help="episodes (the papers use 800 / 600)")
    s.add_argument("--warmup", type=_nonneg_int, default=None,
                   help="random episodes before the agent acts (default: "
                        "the oracle's, 100 for AMC and 20 for HAQ)")
    s.add_argument("--budget", type=float, default=0.5,
                   help="allowed cost as a fraction of the dense (AMC) or "
                        "8-bit (HAQ) cost, in (0, 1]")
    s.add_argument("--cost", default=None,
                   choices=["macs", "latency", "energy", "size", "bops"],
                   help="cost to budget (default: macs for amc, latency "
                        "for haq)")
    s.add_argument("--hardware", default="bitfusion-edge",
                   help="bitfusion-edge, bitfusion-server, bismo or a "
                        "latency table .json (for latency / energy costs)")
    s.add_argument("--round-to", type=_positive_int, default=8,
                   help="AMC: kept channel counts are multiples of this")
    s.add_argument("--finetune-epochs", type=_nonneg_int, default=1,
                   help="HAQ: fine-tune epochs per trial")
    s.add_argument("--finetune-steps", type=_positive_int, default=None,
                   help="HAQ: batches per fine-tune epoch")
    s.add_argument("--calibration-size", type=_positive_int, default=256,
                   help="training images for AMC's refit / HAQ's "
                        "calibration")
    s.add_argument("--val-size", type=_positive_int, default=1000,
                   help="last training images used for the reward")
    s.add_argument("--plan", help="also write the best plan (amc) or "
                   "policy {layer: [w, a]} (haq) JSON here")
    s.add_argument("--directory", default="tfcomp_search",
                   help="keras-tuner project directory")
    s.add_argument("--overwrite", action="store_true",
                   help="start afresh instead of resuming")
    s.add_argument("--seed", type=_nonneg_int, default=0,
                   help="seeds the agent and the refit / fine-tune")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("lut", help="hardware latency lookup tables",
                       description="Latency lookup tables.")
    lut = s.add_subparsers(dest="lut_command", required=True,
                           metavar="SUBCOMMAND")
    b = lut.add_parser(
        "build", formatter_class=fmt, help="build a table for a model",
        description="Tabulate an analytic accelerator model (BISMO, Bit "
                    "Fusion) or measure single-layer TFLite models on this "
                    "host into a LatencyTable JSON.")
    b.add_argument("model", help="input .keras file")
    b.add_argument("output", help="output table .json")
    b.add_argument("--hardware", default="bitfusion-edge",
                   choices=[*_HARDWARE, "bitfusion", "tflite"],
                   help="analytic accelerator model (bitfusion = "
                        "bitfusion-edge) or tflite: measured on this host")
    b.add_argument("--bits", type=_parse_bits_list, default="2-8",
                   help="analytic models: widths (every (w, a) pair)")
    b.add_argument("--channel-fractions", type=_fractions, default=None,
                   help="e.g. 0.2,0.4,0.6,0.8,1.0 (default: 1.0 analytic, "
                        "0.2..1.0 tflite)")
    b.add_argument("--channel-multiple", type=_positive_int, default=None,
                   help="round tabulated channel counts to this multiple")
    b.add_argument("--runs", type=_positive_int, default=50,
                   help="tflite: timed invocations per layer")
    b.add_argument("--warmup", type=_nonneg_int, default=5,
                   help="tflite: untimed invocations")
    b.add_argument("--rounds", type=_positive_int, default=5,
                   help="tflite: interleaved passes")
    b.add_argument("--threads", type=_positive_int, default=1,
                   help="tflite: interpreter threads")
    b.set_defaults(func=cmd_lut)

    s = sub.add_parser("export", help="export to TFLite or bit-serial",
                       description="Export a model and verify the "
                                   "artifact against Keras.")
    ex = s.add_subparsers(dest="format", required=True, metavar="FORMAT")
    t = ex.add_parser("tflite", formatter_class=fmt,
                      help="verified .tflite file",
                      description="Convert to .tflite (float32, dynamic, "
                                  "float16 or full int8) and verify it in "
                                  "the TFLite runtime.")
    t.add_argument("model", help="input .keras file")
    t.add_argument("output", help="output .tflite file")
    t.add_argument("--quantization", default=None,
                   choices=["dynamic", "float16", "int8"])
    t.add_argument("--data", help=_DATA_HELP + "; int8 calibration of "
                   "float models and verification inputs")
    t.add_argument("--verify", type=_nonneg_int, default=256,
                   help="verification inputs (0 = do not verify)")
    t.add_argument("--latency", action="store_true",
                   help="also measure the file's latency")
    t.add_argument("--runs", type=_positive_int, default=50,
                   help="timed runs for --latency")
    t.set_defaults(func=cmd_export)
    b = ex.add_parser("bitserial", formatter_class=fmt,
                      help="BISMO / Bit Fusion descriptor",
                      description="Write a bit-serial descriptor JSON and "
                                  "its packed weight blob for a quantized "
                                  "model; with --data, simulate and compare "
                                  "with Keras.")
    b.add_argument("model", help="quantized .keras file (tfcomp quantize)")
    b.add_argument("output", help="descriptor .json (blob written beside)")
    b.add_argument("--target", default="bismo",
                   choices=["bismo", "bitfusion"])
    b.add_argument("--data", help=_DATA_HELP + "; calibration and "
                   "verification inputs")
    b.add_argument("--verify", type=_nonneg_int, default=32,
                   help="test images simulated for verification")
    b.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "simulate", formatter_class=fmt,
        help="run a bit-serial descriptor on test data",
        description="Run the bit-serial reference simulator on test images "
                    "and print its top-1 accuracy (and agreement with the "
                    "Keras model given by --model).")
    s.add_argument("descriptor", help="descriptor .json from export "
                   "bitserial")
    s.add_argument("--data", default="fashion-mnist", help=_DATA_HELP)
    s.add_argument("--num", type=_positive_int, default=1000,
                   help="test images")
    s.add_argument("--model", help="the .keras model the descriptor came "
                   "from, for top-1 agreement")
    s.add_argument("--json", action="store_true",
                   help="also print the results as JSON")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser(
        "report", formatter_class=fmt,
        help="report.md + PNG plots (Pareto, channels, bits, heatmap)",
        description="Write report.md with accuracy-vs-MACs / latency "
                    "Pareto plots, kept channels and (w_bits, a_bits) per "
                    "layer and a hardware-table heatmap, from a results "
                    "JSON and/or models measured here.")
    s.add_argument("results", nargs="?", default=None,
                   help="results .json ({'rows': [...], ...}; optional)")
    s.add_argument("--model", action="append", default=[],
                   metavar="LABEL=FILE.keras",
                   help="a model to profile (and evaluate with --data); "
                        "repeat; the first is the reference for channels")
    s.add_argument("--tflite", action="append", default=[],
                   metavar="LABEL=FILE.tflite",
                   help="measure this file's latency for the model LABEL")
    s.add_argument("--lut", help="latency table .json (or bismo, "
                   "bitfusion-edge, bitfusion-server): heatmap and "
                   "accelerator latency per model")
    s.add_argument("--data", help=_DATA_HELP + "; test accuracy per model")
    s.add_argument("--num", type=_positive_int, default=1000,
                   help="test images per model")
    s.add_argument("--runs", type=_positive_int, default=50,
                   help="latency runs per .tflite")
    s.add_argument("--title", default="tfcomp report")
    s.add_argument("--output", default="report", help="output directory")
    s.set_defaults(func=cmd_report)
    return p


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv=None) -> int:
    """Entry point of the ``tfcomp`` console script.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad arguments or input (missing
        files, invalid values), 1 when the work itself fails.

    Example:
        >>> main(["profile", "model.keras"])
        0
    """
    global _QUIET
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None
                                                        else 2)
    _QUIET = bool(args.quiet)
    verb = args.command
    if args.command == "export":
        verb += f" {args.format}"
    elif args.command == "lut":
        verb += f" {args.lut_command}"
    try:
        args.func(args)
    except CLIError as e:
        if args.traceback:
            raise
        print(f"tfcomp {verb}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfcomp {verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.traceback:
            raise
        kind = "" if isinstance(e, (ValueError, TypeError)) else \
            f"{type(e).__name__}: "
        print(f"tfcomp {verb}: error: {kind}{_one_line(e)} "
              "(--traceback for details)", file=sys.stderr)
        return 1
    finally:
        _QUIET = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
