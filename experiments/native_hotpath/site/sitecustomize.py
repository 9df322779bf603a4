"""Experiment (issue 20): on a govpipe process's PYTHONPATH (bench.run --experiment DIR),
this folder makes `EventProcessor.process` try the native hot path first."""

import native_first

native_first.install()
