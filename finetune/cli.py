"""Command line: ``python -m finetune predict|serve|loadtest|verify-cache|seeds|search|exps|params-reference``.

Heavy libraries are imported by the command that needs them: ``predict`` and ``serve`` with
an export that has model.onnx run with onnxruntime, tokenizers and numpy alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from finetune.core.contract import PRECISIONS, Predictor, prediction_record
from finetune.core.errors import UserError, one_line, show_tracebacks
from finetune.core.explain import (
    DEFAULT_MAX_WORDS,
    INTEGRATED_GRADIENTS,
    METHODS,
    OCCLUSION,
    Explanation,
    check_explainable,
    explain,
    marked,
)
from finetune.serving.backends import BACKENDS, load_predictor

log = logging.getLogger("finetune")
EXPLAIN_SHOWN = 5  # words predict --explain names and marks per label

# serve's options for finetune.serving.service.Limits, whose defaults apply when an option is not given.
LIMIT_OPTIONS = {
    "max_batch": (int, "texts per model call, across requests"),
    "max_wait_ms": (float, "how long a lone request waits for others to share its batch"),
    "max_texts": (int, "texts per request"),
    "max_chars": (int, "characters per text"),
    "max_body_bytes": (int, "bytes per request body"),
    "max_explain_texts": (int, "texts per /explain request"),
    "max_waiting": (int, "requests waiting for the model; beyond, 503 with Retry-After at once"),
    "max_explain_words": (int, "words explained per text; a longer text is explained in as many spans of words"),
}


def file_lines(name: str) -> list[str]:
    """The non-blank lines of a text file given as --file."""
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"error: --file {path} does not exist")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments, else from --file, else one per line from standard input."""
    if args.texts and args.texts != ["-"]:
        return args.texts
    if args.file:
        return file_lines(args.file)
    return [line for line in sys.stdin.read().splitlines() if line.strip()]


def make_predictor(args: argparse.Namespace, batch_size: int) -> Predictor:
    """The predictor the shared model options (add_model_options) ask for."""
    return load_predictor(args.model, args.backend, args.threshold, batch_size, args.precision, args.int8,
                          args.windows)


def predict_ray_command(args: argparse.Namespace) -> int:
    from finetune.serving.ray_predict import predict_on_ray

    if not args.output:
        raise SystemExit("error: --ray needs --output, the prefix (folder or s3://bucket/prefix/) of the Parquet "
                         "predictions")
    if args.backend == "torch" or args.precision != "fp32":
        raise SystemExit("error: --ray predicts with the export's ONNX model: drop --backend torch and --precision")
    counts = predict_on_ray(Path(args.model), args.input, args.output, args.text_column, tuple(args.id_column or ()),
                            args.ray or None, args.ray_workers, args.ray_cpus, args.overwrite, args.threshold,
                            args.int8, args.windows)
    print(f"{counts['written']} predictions from {counts['shards']} shards written to {args.output} "
          f"({counts['files']} Parquet files)" + (f"; {counts['skipped']} blank texts skipped" if counts["skipped"]
                                                  else ""))
    return 0


def predict_file_command(args: argparse.Namespace) -> int:
    from finetune.serving.batch_predict import check_files, predict_file

    if args.explain:
        raise SystemExit("error: --explain costs a model call per word of each text: pass the texts to explain as "
                         "arguments, --file or stdin, not --input")
    if not args.output:
        raise SystemExit("error: --input needs --output, the predictions file (.csv or .jsonl)")
    source, target = Path(args.input), Path(args.output)
    ids = tuple(args.id_column or ())
    check_files(source, target, args.text_column, args.overwrite, ids)  # before the model loads
    predictor = make_predictor(args, args.batch_size)
    counts = predict_file(predictor, source, target, args.text_column, overwrite=args.overwrite, id_columns=ids)
    print(f"{counts['written']} predictions written to {target}" +
          (f" ({counts['skipped']} blank texts skipped)" if counts["skipped"] else ""))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    if args.ray is not None:
        if not args.input or args.explain:
            raise SystemExit("error: --ray predicts an --input of Parquet shards (a glob, a prefix or a file), "
                             "without --explain")
        return predict_ray_command(args)
    if args.input:
        return predict_file_command(args)
    texts = read_texts(args)
    if not texts:
        raise SystemExit("error: no text to predict: pass texts as arguments, --file FILE, or lines on stdin")
    if args.explain:
        if args.explain_words < 1:
            raise SystemExit(f"error: --explain-words must be at least 1, got {args.explain_words}")
        for text in texts:
            check_explainable(text)  # an empty text, or one without words: refused before the model loads
    predictor = make_predictor(args, args.batch_size)
    predictions = predictor.predict(texts)
    why = (explain(predictor, texts, args.explain_words, args.explain_method) if args.explain
           else [[] for _ in texts])
    for prediction, explained in zip(predictions, why, strict=True):
        if args.json:  # the fields of the API, and the text
            record = prediction_record(prediction, predictor.info.multi_label)
            if args.explain:
                record["explanations"] = [explanation.record() for explanation in explained]
            print(json.dumps(record, ensure_ascii=False))
            continue
        shown = prediction.label
        if prediction.uncertain:
            shown += f" ({prediction.predicted}?)"
        excerpt = prediction.text if len(prediction.text) <= 70 else prediction.text[:67] + "..."
        print(f"{shown}\t{prediction.confidence:.3f}\t{excerpt}")
        for explanation in explained:
            print(explained_lines(explanation, prediction.text))
    return 0


def explained_lines(explanation: Explanation, text: str) -> str:
    """predict's plain answer to --explain: the words that most raised the label's probability, with their
    weights, then the text with those words in [[brackets]]."""
    top = explanation.top(EXPLAIN_SHOWN)
    words = ", ".join(f"{a.word} {a.weight:+.3f}" for a in top) or "no word raised it"
    spans = (f" (the text has {explanation.words} words, weighed in spans of {explanation.unit_words})"
             if explanation.unit_words > 1 else "")
    return (f"  why {explanation.label} ({explanation.probability:.3f}): {words}{spans}\n"
            f"  {marked(explanation, text, EXPLAIN_SHOWN)}")


def serve_command(args: argparse.Namespace) -> int:
    from finetune.serving.service import Limits, serve

    try:
        given = {name: getattr(args, name) for name in LIMIT_OPTIONS if getattr(args, name) is not None}
        limits = Limits(**given)  # the defaults live in Limits alone
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.drain_timeout < 0:
        raise SystemExit(f"error: --drain-timeout must be 0 or more seconds, got {args.drain_timeout}")
    logging.getLogger("finetune").setLevel(logging.INFO)
    predictor = make_predictor(args, limits.max_batch)
    serve(Path(args.model), predictor, args.host, args.port, limits, args.drain_timeout, args.log_texts)
    return 0


def loadtest_command(args: argparse.Namespace) -> int:
    from finetune.serving.loadtest import http_json, run_load

    if args.file:
        texts = file_lines(args.file)
    else:
        try:
            metadata = http_json(args.url, "/metadata")[1]
        except OSError as err:
            raise SystemExit(f"error: no service answers at {args.url} ({err}): start `python -m finetune "
                             "serve` first") from None
        texts = metadata["examples"]
    try:
        result = run_load(args.url, texts, args.requests, args.concurrency, args.texts_per_request)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(asdict(result), indent=2) if args.json else result.summary())
    return 1 if result.errors else 0


def verify_cache_command(args: argparse.Namespace) -> int:
    from finetune.experiments.cache import verify_cache

    bad = verify_cache(Path(args.repo), restore=not args.no_restore)
    verb = "removed" if args.no_restore else "removed and restored from the remote"
    print(f"{len(bad)} corrupted cache objects {verb}" if bad else "cache verified: every object matches its hash")
    return 0


def seeds_command(args: argparse.Namespace) -> int:
    from finetune.core.files import write_json
    from finetune.core.params import PARAMS_FILE, load_params
    from finetune.experiments.seeds import measure_seeds

    repo = Path(args.repo)
    params = load_params(repo / PARAMS_FILE)
    logging.getLogger("finetune").setLevel(logging.INFO)
    result = measure_seeds(repo, params, args.n)
    write_json(result, repo / params.paths.seeds)
    for key, row in result["metrics"].items():
        if not key.startswith("n_"):
            print(f"{key}\t{row['mean']:.4f} +- {row['std']:.4f}\t95% interval [{row['ci_low']:.4f}, "
                  f"{row['ci_high']:.4f}]")
    print(f"written to {params.paths.seeds}; `dvc repro` shows it in the report")
    return 0


def search_command(args: argparse.Namespace) -> int:
    from finetune.core.files import write_json
    from finetune.core.params import PARAMS_FILE, load_params
    from finetune.experiments.search import (
        SearchError,
        apply_best,
        check_summary_target,
        collect,
        open_search,
        plot,
        quiet_optuna,
        run_search,
        summary,
    )

    if args.collect == (args.trials is not None):
        raise SearchError("give --trials N to run trials, or --collect to gather a shared study's trials (not both)")
    repo = Path(args.repo)
    params = load_params(repo / PARAMS_FILE)
    logging.getLogger("finetune").setLevel(logging.INFO)
    # `kill` stops a worker as Ctrl-C does: its running trial is stopped and recorded as failed at once
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with quiet_optuna():
        storage, study = open_search(repo, params, create=not args.collect)
        check_summary_target(repo / params.paths.search, study, args.overwrite)  # before any trial runs or pull
        if args.collect:
            collect(repo, params, study)
        else:
            try:
                run_search(repo, params, args.trials, args.parallel, storage, study)
            except KeyboardInterrupt:
                print("search stopped: the trial running here was stopped and recorded as failed; run the command "
                      "again to go on", file=sys.stderr)
                return 130
        result = summary(study, params)
        write_json(result, repo / params.paths.search)
        plots = plot(study, repo / params.paths.search_plots)
    best = result["best"]
    if best is None:
        print(f"no trial finished; see {params.paths.search} for each trial's failure")
        return 1
    print(f"best trial {best['experiment']}: {result['metric']} {best['value']:.4f} with {best['params']}")
    print(f"every trial: {params.paths.search} and `dvc exp show`; plots: {', '.join(map(str, plots))}")
    if args.apply:
        print(f"applied {apply_best(repo, study, params)} to the workspace (params and outputs)")
    return 0


def exps_command(args: argparse.Namespace) -> int:
    from finetune.core.params import PARAMS_FILE, load_params
    from finetune.experiments.compare import rows, table
    from finetune.experiments.runs import show

    repo = Path(args.repo)
    params = load_params(repo / PARAMS_FILE)
    shown = show(repo, *(["--all-commits"] if args.all_commits else []))
    print(table(rows(shown, params.paths.metrics, f"{params.paths.training_log}/metrics.json"), args.width))
    return 0


def params_reference_command(args: argparse.Namespace) -> int:
    from finetune.core.params_reference import reference, write_reference

    target = Path(args.output)
    if args.check:
        if not target.is_file() or target.read_text(encoding="utf-8") != reference():
            raise SystemExit(f"error: {target} is out of date with finetune/core/params.py and dvc.yaml: run "
                             "`python -m finetune params-reference`")
        print(f"{target} is up to date")
        return 0
    print(f"{target} {'written' if write_reference(target) else 'was up to date'}")
    return 0


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and load the model, the same for predict and serve."""
    parser.add_argument("--model", default="models/export", help="exported model folder (default: models/export)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto (default): ONNX Runtime when the export has model.onnx, else PyTorch; "
                             "onnx: onnxruntime only; torch: transformers")
    parser.add_argument("--int8", action="store_true", help="the export's int8 ONNX model (smaller, a little less "
                        "accurate: see reports/export.json)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="with PyTorch: bf16 autocast (faster where the hardware computes in bf16)")
    parser.add_argument("--threshold", type=float, help="confidence below which to answer UNCERTAIN "
                        "(default: the model's uncertain_threshold)")
    parser.add_argument("--windows", action="store_true", help="read long texts whole, in windows, with a model "
                        "trained on a part of each (a model trained on windows always reads them)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="label texts with an exported model")
    predict.add_argument("texts", nargs="*", help="texts to label ('-' or none: read --file or stdin)")
    add_model_options(predict)
    predict.add_argument("--file", help="a text file, one text per line")
    predict.add_argument("--batch-size", type=int, default=32, help="texts per model call (default: 32)")
    predict.add_argument("--json", action="store_true", help="one JSON object per text")
    predict.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                         help="with --input Parquet shards (a local glob or s3://bucket/prefix/*.parquet) and an "
                         "--output prefix: predict on a Ray cluster (HOST:PORT of its head, ray://HOST:10001, auto; "
                         "no address: a local Ray)")
    predict.add_argument("--ray-workers", type=int, default=1, help="with --ray: predictor actors (default: 1)")
    predict.add_argument("--ray-cpus", type=int, default=1, help="with --ray: CPUs per actor, its ONNX Runtime "
                         "threads (default: 1)")
    predict.add_argument("--explain", action="store_true", help="also the words that drove each answer, by their "
                         "weight: the label's probability lost without the word (--json: word, weight pairs)")
    predict.add_argument("--explain-method", choices=METHODS, default=OCCLUSION,
                         help=f"{OCCLUSION} (default, every backend) or {INTEGRATED_GRADIENTS} (captum; --backend "
                         "torch)")
    predict.add_argument("--explain-words", type=int, default=DEFAULT_MAX_WORDS,
                         help=f"words weighed per text (default: {DEFAULT_MAX_WORDS}); a longer text is weighed in "
                         "as many spans of consecutive words")
    predict.add_argument("--input", help="a CSV, TSV, JSON Lines or text file of any size, predicted in a stream")
    predict.add_argument("--output", help="with --input: the predictions file to write (.csv or .jsonl)")
    predict.add_argument("--text-column", default="text", help="with --input: the CSV column or JSON field")
    predict.add_argument("--overwrite", action="store_true", help="with --input: replace an existing --output")
    predict.add_argument("--id-column", action="append", help="with --input: a column (or JSON field) to copy into "
                         "each prediction as it is, e.g. the row's id; repeat for several")
    predict.set_defaults(handler=predict_command)
    served = commands.add_parser("serve", help="an HTTP prediction service with a web page")
    add_model_options(served)
    served.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    served.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    served.add_argument("--drain-timeout", type=float, default=30.0, help="on SIGTERM or SIGINT, the most seconds "
                        "spent answering the requests already accepted before exiting (default: 30)")
    served.add_argument("--log-texts", action="store_true", help="put the texts sent in the access log (by default "
                        "a request's line gives their number alone)")
    for name, (kind, what) in LIMIT_OPTIONS.items():
        served.add_argument("--" + name.replace("_", "-"), type=kind, help=what + " (default: see GET /metadata)")
    served.set_defaults(handler=serve_command)
    load = commands.add_parser("loadtest", help="a bounded load test of a running service")
    load.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: http://127.0.0.1:8000)")
    load.add_argument("--requests", type=int, default=1000)
    load.add_argument("--concurrency", type=int, default=8, help="clients sending at once")
    load.add_argument("--texts-per-request", type=int, default=1)
    load.add_argument("--file", help="texts to send, one per line (default: the service's examples)")
    load.add_argument("--json", action="store_true", help="print the figures as JSON")
    load.set_defaults(handler=loadtest_command)
    verify = commands.add_parser("verify-cache", help="rehash DVC's cache; replace corrupted objects from the remote")
    verify.add_argument("--repo", default=".", help="repository root (default: .)")
    verify.add_argument("--no-restore", action="store_true", help="only remove corrupted objects")
    verify.set_defaults(handler=verify_cache_command)
    seeds = commands.add_parser("seeds", help="train the current params with several training seeds (DVC "
                                "experiments) and write the spread of each test metric")
    seeds.add_argument("--n", type=int, default=5, help="training seeds, from train.seed up (default: 5)")
    seeds.add_argument("--repo", default=".", help="repository root (default: .)")
    seeds.set_defaults(handler=seeds_command)
    search = commands.add_parser("search", help="search the ranges of search.space in params.yaml with Optuna, "
                                 "each trial a DVC experiment scored on the validation split")
    search.add_argument("--trials", type=int, help="finished trials the study should reach "
                        "(rerunning continues it; workers sharing a study stop together)")
    search.add_argument("--collect", action="store_true", help="pull every completed trial's experiment of a shared "
                        "study (search.git_remote) and write the summary and plots")
    search.add_argument("--parallel", type=int, default=1, help="trials at a time, through DVC's queue")
    search.add_argument("--apply", action="store_true", help="make the best trial's params the workspace's")
    search.add_argument("--overwrite", action="store_true", help="replace a summary of another search at "
                        "paths.search (the one committed with the project, say)")
    search.add_argument("--repo", default=".", help="repository root (default: .)")
    search.set_defaults(handler=search_command)
    exps = commands.add_parser("exps", help="experiments side by side in a normal terminal: the params that differ "
                               "and the headline test and validation figures")
    exps.add_argument("--repo", default=".", help="repository root (default: .)")
    exps.add_argument("--all-commits", action="store_true", help="experiments of every commit, not just HEAD's")
    exps.add_argument("--width", type=int, help="columns to fit (default: the terminal's)")
    exps.set_defaults(handler=exps_command)
    reference = commands.add_parser("params-reference", help="write docs/params.md, every params key with its type, "
                                    "default, allowed values, meaning and the stages that read it")
    reference.add_argument("--output", default="docs/params.md", help="the file to write (default: docs/params.md)")
    reference.add_argument("--check", action="store_true", help="only check that the file is up to date")
    reference.set_defaults(handler=params_reference_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # transformers draws a "Loading weights" bar on every model load: noise before each prediction
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as err:  # bad options, files or models: one line, exit status 1; a bug keeps its traceback
        if show_tracebacks():
            raise
        raise SystemExit(one_line(err)) from None
