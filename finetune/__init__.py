"""Reproducible fine-tuning of transformer text classifiers, driven by DVC.

The stage scripts in ``stages/`` are thin entry points; the logic lives in the
modules of this package, each named for what it does.
"""

__version__ = "0.1.0"
