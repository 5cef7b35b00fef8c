"""Data: read a source into Arrow (sources, dataset), the label layouts (labels) and tokenization."""
