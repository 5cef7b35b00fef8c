"""tokenize: token ids from the model's fast tokenizer, batched, without padding.

Reads: paths.splits; params model.name, tokenize.*.
Writes: paths.tokenized (input_ids, attention_mask[, token_type_ids], label per split).
Run as ``python -m stages.tokenize`` so this file never shadows the standard library's tokenize.
"""

import datasets

from finetune.core.files import save_datasets
from finetune.core.params import stage_params
from finetune.core.stage import run, setup
from finetune.data.tokenization import tokenize_dataset, truncated_share
from finetune.training.models import load_tokenizer, resolve_model


def main() -> None:
    log = setup("tokenize")
    params = stage_params("tokenize")
    tokenizer = load_tokenizer(resolve_model(params.model.name))
    splits = datasets.load_from_disk(params.paths.splits)
    tokenized = tokenize_dataset(splits, tokenizer, params.tokenize.max_length, params.tokenize.truncation)
    save_datasets(tokenized, params.paths.tokenized)
    for name, dataset in tokenized.items():
        log.info("%s: %d rows, %.1f%% at the %d-token limit (%s truncation)", name, len(dataset),
                 100 * truncated_share(dataset, params.tokenize.max_length), params.tokenize.max_length,
                 params.tokenize.truncation)


if __name__ == "__main__":
    run(main)
