"""Hydra configs of segvn, one group per concern; shipped in the wheel as the package ``segvn.conf``."""
