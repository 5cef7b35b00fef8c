"""params.yaml is parsed into typed objects; bad keys fail at once with their names."""

from pathlib import Path

import pytest
import yaml

from finetune.core.params import (
    Params,
    ParamsError,
    check_listed_keys,
    key_value,
    leaf_keys,
    load_params,
    parse_params,
    stage_keys,
    stage_params,
)

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_the_documented_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params == Params()  # params.yaml and the typed defaults say the same
    assert params.seed == 42 and params.data.source == "rotten_tomatoes" and params.model.name == "minilm"
    assert (params.train.learning_rate, params.train.batch_size, params.train.epochs) == (2e-5, 16, 3)
    assert (params.train.weight_decay, params.train.early_stopping_patience) == (0.01, 2)
    assert (params.tokenize.max_length, params.tokenize.truncation) == (128, "head")
    assert params.evaluate.uncertain_threshold == 0.8 and params.split.val_size == 0.1


@pytest.mark.parametrize(("raw", "named"), [
    ({"train": {"learnin_rate": 1e-4}}, "train.learnin_rate: unknown key (did you mean train.learning_rate?)"),
    ({"evaluate": {"uncertain_treshold": 0.5}}, "evaluate.uncertain_treshold: unknown key (did you mean "
                                                "evaluate.uncertain_threshold?)"),
    ({"evalute": {"batch_size": 8}}, "evalute: unknown key (did you mean evaluate?)"),
    ({"extra": 1}, "extra: unknown key (check its spelling"),
    ({"train": {"epochs": "three"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"learning_rate": -1}}, "train.learning_rate"),
    ({"split": {"val_size": 1.5}}, "split.val_size"),
    ({"evaluate": {"uncertain_threshold": 2}}, "evaluate.uncertain_threshold"),
    ({"tokenize": {"truncation": "middle"}}, "tokenize.truncation"),
    ({"tokenize": {"max_windows": 0}}, "tokenize.max_windows"),
    ({"tokenize": {"stride": -1}}, "tokenize.stride"),
    ({"evaluate": {"window_aggregation": "median"}}, "evaluate.window_aggregation"),
    ({"data": {"encoding": "klingon-8"}}, "data.encoding"),
    ({"data": {"text_columns": []}}, "data.text_columns"),
    ({"data": {"labels": ["a", "a"]}}, "data.labels"),
    ({"data": {"sha256": "abc"}}, "data.sha256"),
    ({"data": {"max_samples": 0}}, "data.max_samples"),
    ({"train": {"num_processes": 0}}, "train.num_processes"),
    ({"export": {"onnx": False, "int8": True}}, "export.int8 quantises the ONNX model: set export.onnx to true"),
    ({"export": {"parity_tolerance": 0}}, "export.parity_tolerance"),
])
def test_bad_values_name_their_key(raw, named):
    with pytest.raises(ParamsError) as raised:
        parse_params(raw)
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_yaml_floats_written_by_dvc_are_accepted():
    # `dvc exp run -S train.learning_rate=5e-5` writes 5e-05, which YAML 1.1 reads as a string
    assert parse_params(yaml.safe_load("train: {learning_rate: 5e-05}")).train.learning_rate == 5e-5


def test_not_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    broken.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(broken)


# Keys no stage reads, each with who does.
NOT_READ_BY_STAGES = {
    "search": "the search command (python -m finetune search)",
    "paths.search": "the search command",
    "paths.search_plots": "the search command",
    "paths.source_check": "dvc.yaml: check-params writes it, download depends on it",
}


def test_every_listed_key_exists_and_every_key_is_read_by_a_stage_or_named_here():
    values = Params().model_dump(mode="json")
    listed = stage_keys(ROOT / "dvc.yaml")
    for keys in listed.values():
        for key in keys:
            key_value(values, key)  # raises for a key no section has
    read = {key for keys in listed.values() for key in keys} | set(NOT_READ_BY_STAGES)
    every = [leaf for section in values for leaf in leaf_keys(values[section], section)]
    unread = [key for key in every if not any(key == k or key.startswith(k + ".") for k in read)]
    assert not unread, f"no stage lists {unread} under params in dvc.yaml"


def params_file(tmp_path, **updates) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in updates.items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_stage_reads_params_yaml_as_it_is_through_the_keys_dvc_yaml_lists(tmp_path):
    params = stage_params("train", params_file(tmp_path, **{"train.epochs": 5}), ROOT / "dvc.yaml")
    assert params.train.seed == 42 and params.train.epochs == 5 and params.train.learning_rate == 2e-5
    assert params.train.model_dump()["epochs"] == 5  # a listed section is a whole object
    with pytest.raises(ParamsError, match=r"stage 'train' reads params key 'seed'.*dvc.yaml"):  # the data seed
        _ = params.seed
    with pytest.raises(ParamsError, match=r"stage 'train' reads params key 'evaluate'.*dvc.yaml"):
        _ = params.evaluate.batch_size


def test_stage_view_allows_listed_leaves_only():
    params = stage_params("export", ROOT / "params.yaml", ROOT / "dvc.yaml")
    assert params.data.source == "rotten_tomatoes"
    with pytest.raises(ParamsError, match=r"data\.encoding"):
        _ = params.data.encoding
    with pytest.raises(ParamsError, match=r"has no stage 'other'"):
        stage_params("other", ROOT / "params.yaml", ROOT / "dvc.yaml")


def test_every_key_a_stage_reads_must_be_written_in_the_file():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = stage_keys(ROOT / "dvc.yaml")
    check_listed_keys(raw, keys)  # the repository's own file is complete
    del raw["train"]["compile"], raw["tokenize"]["max_length"]
    raw["data"]["labels"] = None  # null is written, not missing
    with pytest.raises(ParamsError) as raised:
        check_listed_keys(raw, keys)
    message = str(raised.value)
    assert "tokenize.max_length: 128 (read by baseline, error-analysis, export, report, tokenize)" in message
    assert "train.compile: false (read by export, report, train)" in message and "data.labels" not in message


def test_relative_paths_inside_a_queued_experiment_copy_resolve_against_the_workspace(tmp_path, monkeypatch):
    from finetune.core.params import local_path, missing_path_hint, workspace_root

    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "data" / "mine.csv").write_text("text,label\n")  # git-ignored: not in the copy
    (tmp_path / "outside.csv").write_text("text,label\n")
    assert workspace_root(copy) == repo and workspace_root(repo) is None
    monkeypatch.chdir(copy)
    assert local_path("data/mine.csv") == repo / "data" / "mine.csv"
    assert local_path("../outside.csv") == repo / "../outside.csv" and local_path("../outside.csv").exists()
    assert not local_path("data/missing.csv").exists()
    assert "give paths outside the repository as absolute paths" in missing_path_hint()
    monkeypatch.chdir(repo)
    assert local_path("data/mine.csv") == Path("data/mine.csv") and missing_path_hint() == ""


def test_a_missing_source_in_a_queued_experiment_says_to_use_an_absolute_path(tmp_path, monkeypatch):
    from finetune.core.params import DataParams
    from finetune.data.sources import DataSourceError, open_source

    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with (pytest.raises(DataSourceError, match=r"queued experiment.*absolute paths"),
          open_source(DataParams(source="../nowhere/reviews.csv"))):
        pass


def test_the_params_reference_is_written_from_the_schema_and_up_to_date():
    """docs/params.md lists every key with its type, default, allowed values, meaning and readers; it is written
    by `python -m finetune params-reference` and cannot drift from params.py or dvc.yaml."""
    from finetune.core.params_reference import reference

    text = reference(ROOT / "dvc.yaml")
    assert (ROOT / "docs/params.md").read_text() == text, "run `python -m finetune params-reference`"
    values = Params().model_dump(mode="json")
    every = [leaf for section in values for leaf in leaf_keys(values[section], section)]
    assert all(f"| `{key}` |" in text for key in every)
    row = next(line for line in text.splitlines() if line.startswith("| `tokenize.truncation` |"))
    assert row.split(" | ")[1:5] == ["one of `head`, `tail`, `head+tail`, `windows`", '`"head"`', "-",
                                     "tokenize, error-analysis, export, report"]
    row = next(line for line in text.splitlines() if line.startswith("| `train.epochs` |"))
    assert row.split(" | ")[1:5] == ["int", "`3`", ">= 1", "train, export, report"]


def test_tokenize_settings_list_the_window_keys_only_with_windows():
    from finetune.core.params import TokenizeParams

    assert TokenizeParams().settings() == {"max_length": 128, "truncation": "head"}
    assert TokenizeParams(truncation="windows").settings() == {"max_length": 128, "truncation": "windows",
                                                                 "stride": 32, "max_windows": 8}


def test_train_settings_list_lora_only_when_it_trains():
    """The report's and the model card's settings: flat keys, LoRA's only with train.adapter lora."""
    from finetune.core.params import LoraParams, TrainParams

    plain = TrainParams().settings()
    assert "adapter" in plain and not [key for key in plain if key.startswith("lora")]
    lora = TrainParams(adapter="lora", lora=LoraParams(rank=4)).settings()
    assert lora["lora.rank"] == 4 and lora["lora.target_modules"] == "auto" and "lora" not in lora
