"""Benchmarks: FastAGI servers and AMI parsers measured side by side (``python -m bench``)."""

from __future__ import annotations
