"""Expected errors end a stage or command with one `error:` line; bugs keep their traceback."""

import pytest

from finetune.core.errors import TRACEBACK_VARIABLE, UserError
from finetune.core.params import ParamsError
from finetune.core.stage import run


def failing(err: Exception):
    def main() -> None:
        raise err

    return main


def test_an_expected_error_is_one_line_and_exit_status_1(monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as ended:
        run(failing(ParamsError("params.yaml is invalid:\n  train.epochs: too small")))
    assert ended.value.code == "error: params.yaml is invalid: train.epochs: too small"  # exit status 1


def test_the_traceback_is_there_when_asked(monkeypatch):
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(ParamsError):
        run(failing(ParamsError("bad")))


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(KeyError):
        run(failing(KeyError("not a user's mistake")))
    assert not issubclass(KeyError, UserError)


def test_stage_summaries_read_as_words_not_python_reprs():
    from finetune.core.stage import readable

    assert readable({"train": 9180, "validation": 1021}) == "train 9,180, validation 1,021"
    assert readable(["negation", "label=negative"]) == "negation, label=negative"
    assert readable({"best_epoch": 2, "best_eval_loss": 0.39612, "early_stopped": False, "x": None}) == (
        "best epoch 2, best eval loss 0.3961, early stopped false, x none")
    assert readable({"tfidf": {"accuracy": 0.77261}}) == "tfidf (accuracy 0.7726)"
