"""tokenize: token ids from the model's fast tokenizer, batched, without padding.

Reads: paths.splits; params model.name, tokenize.* (stride and max_windows with truncation windows).
Writes: paths.tokenized (input_ids, attention_mask[, token_type_ids], label per split; with truncation windows one
row per window, with its document's index in the split and its place in the text).
Run as ``python -m stages.tokenize`` so this file never shadows the standard library's tokenize.
"""

import datasets

from finetune.core.contract import Windows
from finetune.core.files import save_datasets
from finetune.core.params import stage_params
from finetune.core.stage import run, setup
from finetune.data.documents import window_counts
from finetune.data.tokenization import tokenize_dataset, truncated_share
from finetune.training.models import load_tokenizer, resolve_model


def main() -> None:
    log = setup("tokenize")
    params = stage_params("tokenize")
    settings = params.tokenize
    tokenizer = load_tokenizer(resolve_model(params.model.name))
    splits = datasets.load_from_disk(params.paths.splits)
    tokenized = tokenize_dataset(splits, tokenizer, settings.max_length, settings.truncation,
                                 windows=Windows(settings.stride, settings.max_windows))
    save_datasets(tokenized, params.paths.tokenized)
    for name, dataset in tokenized.items():
        if settings.truncation == "windows":
            counts = window_counts(dataset)
            log.info("%s: %d texts in %d windows of %d tokens (stride %d); %.1f%% of texts in several, %.1f%% "
                     "at the cap of %d", name, len(counts), len(dataset), settings.max_length, settings.stride,
                     100 * (counts > 1).mean(), 100 * (counts >= settings.max_windows).mean(), settings.max_windows)
        else:
            log.info("%s: %d rows, %.1f%% at the %d-token limit (%s truncation)", name, len(dataset),
                     100 * truncated_share(dataset, settings.max_length), settings.max_length, settings.truncation)


if __name__ == "__main__":
    run(main)
