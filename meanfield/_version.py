"""The one source of meanfield's version: read by ``meanfield.__version__``, ``meanfield --version`` and the
packaging metadata (``[tool.setuptools.dynamic]`` in pyproject.toml)."""
__version__ = "0.1.0"
