"""download: read ``data.source`` into an Arrow DatasetDict.

Reads: params data.*, seed; the source (packaged corpus, hub, URL or local path).
Writes: paths.raw (splits with a ``text`` column and a ``label`` column: a ClassLabel, or a
list of them for multi-label data) and paths.data_report (task, labels, each label's count
in train, labels per text, rows per split, empty and duplicate texts dropped; a hub dataset's commit).
The source is read a chunk at a time; rows wait in a temporary folder beside paths.raw.
"""

import tempfile
from pathlib import Path

from finetune.core.files import write_json
from finetune.core.params import stage_params
from finetune.core.stage import readable, run, setup
from finetune.data.dataset import build_raw, raw_report, save_dataset_dict
from finetune.data.sources import open_source, resolve_revision


def main() -> None:
    log = setup("download")
    params = stage_params("download")
    raw_path = Path(params.paths.raw)
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    revision = resolve_revision(params.data)  # a hub dataset's commit; None for other sources
    with open_source(params.data, revision) as chunks, tempfile.TemporaryDirectory(prefix=".download-",
                                                                         dir=raw_path.parent) as scratch:
        raw, cleaning = build_raw(chunks, params.data, params.seed, Path(scratch))
        save_dataset_dict(raw, raw_path)
        report = raw_report(raw, cleaning, params.data.source, revision)
    write_json(report, params.paths.data_report)
    log.info("%s (%s): rows %s; labels %s; dropped empty texts: %s; dropped repeated texts: %s",
             params.data.source, report["task"].replace("_", "-"), readable(report["rows"]), readable(report["labels"]),
             readable(cleaning.empty_dropped), readable(cleaning.duplicates_dropped))

if __name__ == "__main__":
    run(main)
