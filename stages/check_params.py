"""check-params: validate all of params.yaml before any stage's outputs are touched.

Reads: params.yaml (every key), data.source and model.name (that they exist; nothing is loaded).
Writes: params/<stage>.json for every other stage: the keys it reads, defaults filled in.
DVC deletes a stage's outputs before running it, so a params mistake must fail here, in
the first stage, whose files are declared ``persist: true`` and are only written once
everything is valid. Files whose bytes do not change leave their stages up to date.
"""

from pathlib import Path

from finetune.files import write_json
from finetune.models import resolve_model
from finetune.params import STAGE_PARAMS_DIR, load_params, stage_file, stage_files
from finetune.sources import check_source
from finetune.stage import run, setup


def main() -> None:
    log = setup("check-params")
    params = load_params()
    check_source(params.data)
    resolve_model(params.model.name)
    files = stage_files(params)
    for stage, content in files.items():
        write_json(content, stage_file(stage))
    stale = [p for p in Path(STAGE_PARAMS_DIR).glob("*.json") if p.stem not in files]
    for path in stale:  # a stage that no longer exists
        path.unlink()
    log.info("params.yaml is valid; wrote %s/<stage>.json for %d stages", STAGE_PARAMS_DIR, len(files))


if __name__ == "__main__":
    run(main)
