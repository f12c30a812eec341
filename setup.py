"""Installs lopt: learned optimizers (GPS) and optimizer search (rule language) in JAX."""

import setuptools

setuptools.setup(
    name="lopt",
    version="0.1.0",
    description="Learning optimization algorithms in JAX: GPS and Neural Optimizer Search.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["lopt", "lopt.*"]),
    package_data={"lopt": ["pretrained/*/*", "rules/discovered.json"]},
    install_requires=[
        "jax>=0.4.30",
        "jaxlib>=0.4.30",
        "optax>=0.2.4",
        "flax>=0.10",
        "chex>=0.1.87",
        "numpy>=1.26",
        "absl-py>=2.0",
        "matplotlib>=3.8",
    ],
    extras_require={
        "data": ["scikit-learn>=1.3"],
        "test": [
            "pytest>=8",
            "ruff>=0.6",
            "scikit-learn>=1.3",
            "scipy>=1.11",
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6.29",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
