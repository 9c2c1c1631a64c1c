"""Training steps shared by the demo's stages (:mod:`tfcomp.demo`,
:mod:`tfcomp.demo_joint`): compiling a classifier and the chain's final
stage, a QAT fine-tune of a bit policy.

Example:
    >>> qat = qat_finetune(ctx, pruned, policy, lr=1e-4, epochs=1,
    ...                    message="[quantize] QAT fine-tune, 1 epoch(s)")
"""

from __future__ import annotations

__all__ = ["compile_classifier", "qat_finetune"]


def compile_classifier(model, lr: float = 1e-3):
    """Compiles ``model`` (logits out, integer labels) with Adam(``lr``);
    returns it."""
    import keras

    from tfcomp._unpinned import unpinned

    model.compile(
        optimizer=unpinned(keras.optimizers.Adam(lr)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def qat_finetune(ctx, model, bits, lr: float, epochs: int, message: str):
    """Quantizes ``model`` at ``bits`` (:func:`tfcomp.quantization.quantize_model`),
    calibrates on 512 training images, prints ``message`` and fine-tunes
    ``epochs`` epoch(s) of Adam(``lr``), batch 128, on ``ctx``'s training
    set; returns the QAT model."""
    from tfcomp.quantization import calibrate, quantize_model

    qat = quantize_model(model, bits=bits)
    calibrate(qat, ctx.x_train[:512])
    compile_classifier(qat, lr)
    print(message)
    qat.fit(ctx.x_train, ctx.y_train, batch_size=128, epochs=epochs,
            verbose=2)
    return qat
