"""Experiments around the pipeline, run by DVC: experiment runs and the queue (runs), the search, training seeds,
and the check of DVC's cache."""
