"""Packaging for tfcomp: model compression for Keras 3 on TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="tfcomp",
    version="0.1.0",
    description=(
        "Model compression for Keras 3: structured pruning, mixed-precision "
        "quantization, hardware-aware search, TFLite and bit-serial export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfcomp", "tfcomp.*"]),
    package_data={"tfcomp": ["export/schemas/*.json"]},
    install_requires=[
        "keras>=3.5",
        "tensorflow-cpu>=2.16; platform_machine=='x86_64'",
        "tensorflow>=2.16; platform_machine!='x86_64'",
        "keras-tuner>=1.4.7",
        # keras-tuner's Tuner imports tensorboard's hparams API on the
        # TensorFlow backend; tensorflow-cpu 2.21 no longer pulls it in.
        "tensorboard>=2.16",
        "numpy>=1.26",
        "scipy>=1.11",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "ai-edge-litert>=1.0",
    ],
    extras_require={
        "tfmot": ["tensorflow-model-optimization>=0.8", "tf-keras>=2.16"],
        # per-layer float16 / int8 / int4 LiteRT files (export_tflite with a
        # precision policy, measure_tflite_table(precisions=...))
        "litert": ["ai-edge-quantizer>=0.10"],
        "dev": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "ruff>=0.4",
                "jsonschema>=4", "ai-edge-quantizer>=0.10"],
    },
    entry_points={"console_scripts": ["tfcomp=tfcomp.cli:main"]},
)
