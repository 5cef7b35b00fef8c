"""ONNX export: dynamic axes, parity with PyTorch, int8, byte-stable files and a runtime without torch."""

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from finetune.core.contract import ExportError, Windows
from finetune.export.model_folder import export_model
from finetune.export.onnx_export import ParityError, export_checked, export_onnx, parity_error
from finetune.serving.onnx_predictor import INT8_FILE, ONNX_FILE, OnnxPredictor
from finetune.serving.torch_predictor import TorchPredictor
from tests.conftest import ROOT, make_tiny_model, offline_env

TEXTS = ["fine", "not good at all, and far too long for its own good", "word " * 300, "meh.", "a moving film " * 20]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A three-class tiny model exported with head+tail truncation at 32 tokens, plus its ONNX model."""
    model = make_tiny_model(tmp_path_factory.mktemp("model"), num_labels=3)
    target = tmp_path_factory.mktemp("export") / "export"
    export_model(model, target, 1.5, {"uncertain_threshold": 0.4, "finetune_max_length": 32,
                                      "finetune_truncation": "head+tail"})
    export_onnx(target, target / ONNX_FILE)
    return target


def test_onnx_logits_match_pytorch_for_any_batch_and_length(exported):
    assert parity_error(exported, TEXTS) < 1e-4
    onnx = OnnxPredictor(exported, batch_size=2)  # batches of other sizes and lengths than the traced ones
    torch_logits = TorchPredictor(exported).logits(TEXTS)
    assert np.abs(onnx.logits(TEXTS) - torch_logits).max() < 1e-4
    assert np.abs(onnx.logits(TEXTS[:1]) - torch_logits[:1]).max() < 1e-4


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_onnx_predictor_answers_like_the_pytorch_one(exported, tmp_path, truncation):
    folder = shutil.copytree(exported, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "finetune_truncation": truncation}))
    onnx, torch = OnnxPredictor(folder).predict(TEXTS), TorchPredictor(folder).predict(TEXTS)
    assert [p.label for p in onnx] == [p.label for p in torch] and [p.text for p in onnx] == TEXTS
    assert [p.confidence for p in onnx] == pytest.approx([p.confidence for p in torch], abs=1e-5)


def test_onnx_token_ids_equal_the_training_tokenization(exported, tmp_path):
    from finetune.data.tokenization import encode_batch

    predictor = TorchPredictor(exported)
    for truncation, windows in [("head", None), ("tail", None), ("head+tail", None), ("windows", Windows(3, 4))]:
        expected = encode_batch(TEXTS, predictor.tokenizer, 32, truncation, windows)
        onnx = OnnxPredictor(exported)
        onnx.info = dataclasses.replace(onnx.info, truncation=truncation, windows=windows)
        rows, owners = onnx.encode(TEXTS)
        assert rows == expected["input_ids"], truncation
        assert owners == expected.get("document", list(range(len(TEXTS))))
    assert len(rows) > len(TEXTS)  # some text was read in several windows


def test_the_onnx_runtime_path_needs_no_torch_transformers_or_datasets(exported):
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'datasets', 'sklearn', 'pandas'):\n"
        "    sys.modules[name] = None  # importing any of them now fails\n"
        "from finetune.serving.onnx_predictor import OnnxPredictor\n"
        f"print(OnnxPredictor({str(exported)!r}).predict(['a fine film'])[0].predicted)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=offline_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"LABEL_0", "LABEL_1", "LABEL_2"}


def test_export_is_byte_identical_across_runs_and_checkouts(exported, tmp_path):
    export_onnx(exported, tmp_path / "again.onnx")
    again = (tmp_path / "again.onnx").read_bytes()
    assert again == (exported / ONNX_FILE).read_bytes()
    # The exporter records a stack trace per node: absolute paths of this checkout and line numbers of our code.
    assert str(ROOT).encode() not in again and b"onnx_export.py" not in again
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "again.onnx")).graph.node}
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops and ops & {"Attention", "MultiHeadAttention"}, ops


def test_checked_export_writes_int8_with_its_accuracy_beside_fp32(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / "export")
    labels = [0, 1, 2, 0, 1]
    figures = export_checked(folder, TEXTS, labels, parity_texts=4, tolerance=1e-4, int8=True)
    assert figures["parity_max_abs_error_micro"] < 100 and figures["parity_texts"] == 4
    assert figures["parity_tolerance_micro"] == 100  # millionths: DVC shows 5 decimals, 3e-6 would print 0.0
    assert 0 <= figures["int8_accuracy"] <= 1 and 0 <= figures["fp32_accuracy"] <= 1
    assert figures["int8_accuracy_delta"] == pytest.approx(figures["int8_accuracy"] - figures["fp32_accuracy"])
    assert (folder / INT8_FILE).stat().st_size < (folder / ONNX_FILE).stat().st_size
    assert len(OnnxPredictor(folder, file=INT8_FILE).predict(TEXTS)) == len(TEXTS)


def test_the_export_prints_no_library_chatter(exported, tmp_path):
    """The export stage used to print about a hundred onnxscript, quantiser and torch lines per run."""
    script = ("import shutil, sys\n"
              "from pathlib import Path\n"
              "from finetune.core.stage import setup\n"
              "from finetune.export.onnx_export import export_checked\n"
              "setup('export')\n"
              f"folder = Path(shutil.copytree({str(exported)!r}, {str(tmp_path / 'export')!r}))\n"
              f"export_checked(folder, {TEXTS!r}, [0, 1, 2, 0, 1], 4, 1e-4, True)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=offline_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


def test_a_parity_failure_keeps_no_onnx_model(exported, tmp_path):
    folder = shutil.copytree(exported, tmp_path / "export")
    (folder / ONNX_FILE).unlink()
    with pytest.raises(ParityError, match=r"more than export\.parity_tolerance"):
        export_checked(folder, TEXTS, [0] * len(TEXTS), parity_texts=5, tolerance=-1.0, int8=False)  # unmeetable
    assert not (folder / ONNX_FILE).exists()


def test_a_missing_onnx_file_says_how_to_get_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="dvc repro export"):
        OnnxPredictor(tmp_path)


def windowed_copy(exported, folder, **keys):
    """The tiny export with other settings in its config.json."""
    folder = shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **keys}))
    return folder


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_a_model_read_in_windows_answers_per_text_alike_in_both_backends(exported, tmp_path, aggregation):
    from finetune.training.inference import predict_logits

    folder = windowed_copy(exported, tmp_path / "export", finetune_truncation="windows", finetune_stride=3,
                           finetune_max_windows=4, finetune_window_aggregation=aggregation)
    onnx, torch = OnnxPredictor(folder, batch_size=3), TorchPredictor(folder)
    assert onnx.info.windows == Windows(3, 4) and onnx.info.aggregation == aggregation
    both = torch.logits(TEXTS)
    assert np.abs(onnx.logits(TEXTS) - both).max() < 1e-4 and both.shape == (len(TEXTS), 3)
    assert np.abs(torch.logits(TEXTS[2:3]) - both[2:3]).max() < 1e-5  # alone as in a batch
    # the long text's logits are its windows' logits, each computed alone, aggregated
    rows, _ = onnx.encode(TEXTS[2:3])
    assert len(rows) == 4  # 300 words, 30 tokens a window: capped at 4
    alone = np.concatenate([predict_logits(torch.model, torch.tokenizer, [{"input_ids": row,
                            "attention_mask": [1] * len(row), "token_type_ids": [0] * len(row)}], 1) for row in rows])
    combined = alone.mean(axis=0) if aggregation == "mean" else alone.max(axis=0)
    assert np.abs(both[2] - combined).max() < 1e-5
    answers = onnx.predict(TEXTS)
    assert [a.text for a in answers] == TEXTS and len(answers) == len(TEXTS)


def test_a_model_trained_on_heads_reads_windows_only_when_asked(exported, tmp_path):
    with pytest.raises(ExportError, match=r"finetune_stride .*finetune_max_windows.*export the model again"):
        OnnxPredictor(exported, windows=True)
    folder = windowed_copy(exported, tmp_path / "export", finetune_stride=3, finetune_max_windows=4,
                           finetune_window_aggregation="mean")
    head, asked = OnnxPredictor(folder), OnnxPredictor(folder, windows=True)
    assert head.info.windows is None and asked.info.windows == Windows(3, 4) and asked.truncation == "head+tail"
    short, long = TEXTS[:1], [" ".join(f"token{i} is here" for i in range(40))]
    assert np.abs(head.logits(short) - asked.logits(short)).max() < 1e-5  # one window: the same tokens
    assert len(head.encode(long)[0]) == 1 and len(asked.encode(long)[0]) == 4  # read whole, in windows
    assert np.abs(TorchPredictor(folder, windows=True).logits(TEXTS) - asked.logits(TEXTS)).max() < 1e-4
    bad = windowed_copy(exported, tmp_path / "bad", finetune_stride=40, finetune_max_windows=4,
                        finetune_window_aggregation="mean")
    for backend in (OnnxPredictor, TorchPredictor):
        with pytest.raises(ExportError, match="finetune_stride is 40, not below the 30 tokens"):
            backend(bad, windows=True)
