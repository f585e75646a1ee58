"""meanfield's test suite (a regular package, so that a top-level ``tests`` package installed by another project,
such as neural-tangents 0.6.5, cannot shadow ``tests._reference``)."""
