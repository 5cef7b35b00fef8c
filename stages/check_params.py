"""check-params: validate all of params.yaml before any other stage's outputs are touched.

Reads: params.yaml (every key), dvc.yaml (the keys each stage lists), data.source (that it exists and, where its
header is cheap to read, has the columns the params name) and model.name (that it exists, that transformers has a
text classifier for its type, that its tokenizer can pad a batch, that tokenize.max_length fits its positions and
holds text besides the special tokens, that tokenize.stride lets windows move on, and that train.adapter's and
train.gradient_checkpointing's settings fit its layers; the weights are not loaded).
Writes: paths.source_check, the data files whose headers were checked and their columns. download depends on it,
so DVC runs this stage first: DVC deletes a stage's outputs before running it, so a params mistake must fail here.
Its output is declared ``persist: true``: DVC keeps it when a run fails.
"""

from finetune.core.files import write_json
from finetune.core.params import check_listed_keys, parse_params, read_raw, stage_keys
from finetune.core.stage import run, setup
from finetune.data.sources import check_source
from finetune.data.tokenization import check_token_budget
from finetune.training.adapters import check_lora
from finetune.training.models import (
    check_gradient_checkpointing,
    check_position_limit,
    check_sequence_classifier,
    load_tokenizer,
    model_structure,
    resolve_model,
)


def main() -> None:
    log = setup("check-params")
    raw = read_raw()
    params = parse_params(raw)
    check_listed_keys(raw, stage_keys())
    columns = check_source(params.data)
    model = resolve_model(params.model.name)
    check_sequence_classifier(model)
    tokenizer = load_tokenizer(model)  # a tokenizer that cannot pad fails here, not in training
    check_token_budget(tokenizer, params.tokenize.max_length, params.tokenize.truncation, params.tokenize.stride)
    structure = model_structure(model)
    check_position_limit(structure.config, params.tokenize.max_length)
    check_lora(structure, params.train)
    check_gradient_checkpointing(structure, params.train.gradient_checkpointing)
    write_json({"source": params.data.source, "columns": columns}, params.paths.source_check)
    log.info("params.yaml is valid%s", "".join(f"; {name} has the columns the params name"
                                                for name in columns))


if __name__ == "__main__":
    run(main)
