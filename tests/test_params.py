"""params.yaml is parsed into typed objects; bad keys fail at once with their names."""

from pathlib import Path

import pytest
import yaml

from finetune.files import write_json
from finetune.params import (
    STAGE_KEYS,
    Params,
    ParamsError,
    key_value,
    load_params,
    parse_params,
    stage_files,
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


def test_every_listed_key_exists():
    values = Params().model_dump()
    for keys in STAGE_KEYS.values():
        for key in keys:
            key_value(values, key)  # raises for a key no section has


def write_stage_files(folder, params: Params) -> None:
    for stage, content in stage_files(params).items():
        write_json(content, folder / f"{stage}.json")


def test_stage_view_refuses_keys_the_stage_does_not_list(tmp_path):
    write_stage_files(tmp_path, parse_params({"train": {"epochs": 5}}))
    params = stage_params("train", tmp_path)
    assert params.train.seed == 42 and params.train.epochs == 5 and params.train.learning_rate == 2e-5
    assert params.train.model_dump()["epochs"] == 5  # a listed section is a whole object
    with pytest.raises(ParamsError, match=r"stage 'train' reads params key 'seed'.*STAGE_KEYS"):  # the data seed
        _ = params.seed
    with pytest.raises(ParamsError, match=r"stage 'train' reads params key 'evaluate'.*STAGE_KEYS"):
        _ = params.evaluate.batch_size


def test_stage_view_allows_listed_leaves_only(tmp_path):
    write_stage_files(tmp_path, Params())
    params = stage_params("export", tmp_path)
    assert params.data.source == "rotten_tomatoes"
    with pytest.raises(ParamsError, match=r"data\.encoding"):
        _ = params.data.encoding
    with pytest.raises(ParamsError, match=r"other\.json not found.*dvc repro"):
        stage_params("other", tmp_path)


def other_value(key: str, value: object) -> object:
    """A different valid value for ``key``."""
    special = {"data.labels": ["a", "b"], "data.sha256": "0" * 64, "data.max_samples": 64,
               "tokenize.truncation": "tail", "data.encoding": "latin-1", "export.int8": False,
               "data.label_columns": ["toxic", "insult"], "train.class_weights": "balanced", "train.precision": "fp32",
               "evaluate.decision_threshold": "tuned", "search.direction": "minimize",
               "search.trial_timeout_s": 60.0, "search.space": {"train.epochs": {"low": 1, "high": 2}}}
    if key in special:
        return special[key] if value != special[key] else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    if isinstance(value, list):
        return [*value, "extra"]
    return f"{value}_x"


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    found = {}
    for key, value in node.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "search.space":  # its keys are dotted params keys
            found |= leaves(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_each_params_key_changes_exactly_the_files_of_the_stages_that_read_it():
    """What makes a stage rerun: the bytes of its params/<stage>.json. For every key of params.yaml, the files
    that change are those of the stages STAGE_KEYS lists it for, and a key no stage reads changes none."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    before = stage_files(parse_params(raw))
    for key, value in leaves(raw).items():
        changed = yaml.safe_load((ROOT / "params.yaml").read_text())
        node = changed
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = other_value(key, value)
        if key == "export.onnx":
            node["int8"] = False  # int8 quantises the ONNX model
        after = stage_files(parse_params(changed))
        expected = {stage for stage, keys in STAGE_KEYS.items() if any(key == k or key.startswith(k + ".")
                                                                       for k in keys)}
        assert {stage for stage in before if after[stage] != before[stage]} == expected, key


def test_relative_paths_inside_a_queued_experiment_copy_resolve_against_the_workspace(tmp_path, monkeypatch):
    from finetune.params import local_path, missing_path_hint, workspace_root

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
    from finetune.params import DataParams
    from finetune.sources import DataSourceError, open_source

    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with (pytest.raises(DataSourceError, match=r"queued experiment.*absolute paths"),
          open_source(DataParams(source="../nowhere/reviews.csv"))):
        pass
