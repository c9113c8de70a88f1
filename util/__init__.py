"""Shared support of aavae.py, linear_eval.py and methods/: data, the run directory, the process group and
files (misc), and the probes on cached features."""
