"""split: stratified train/validation from train; the test split is kept untouched.

Reads: paths.raw; params split.*, seed.
Writes: paths.splits (train, validation, test). A source without a test split
gets one carved from train first (split.test_size).
"""

import datasets

from finetune.data import split_dataset
from finetune.params import stage_params
from finetune.stage import setup


def main() -> None:
    log = setup("split")
    params = stage_params("split")
    raw = datasets.load_from_disk(params.paths.raw)
    splits = split_dataset(raw, params.split, params.seed)
    splits.save_to_disk(params.paths.splits)
    log.info("split sizes: %s", {name: len(d) for name, d in splits.items()})


if __name__ == "__main__":
    main()
