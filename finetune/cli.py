"""Command line: ``python -m finetune predict --model models/export "text" ...`` and ``verify-cache``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from finetune.predict import Predictor

log = logging.getLogger("finetune")


def read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments, else from --file, else one per line from standard input."""
    if args.texts and args.texts != ["-"]:
        return args.texts
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise SystemExit(f"error: --file {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    return [line for line in lines if line.strip()]


def predict_command(args: argparse.Namespace) -> int:
    texts = read_texts(args)
    if not texts:
        raise SystemExit("error: no text to predict: pass texts as arguments, --file FILE, or lines on stdin")
    if not Path(args.model).is_dir():
        raise SystemExit(f"error: --model {args.model} is no folder: run `dvc repro` or `dvc pull` first")
    predictor = Predictor(args.model, threshold=args.threshold, batch_size=args.batch_size)
    predictions = predictor.predict(texts)
    for prediction in predictions:
        if args.json:
            print(json.dumps(asdict(prediction), ensure_ascii=False))
        else:
            shown = prediction.label
            if prediction.label != prediction.predicted:
                shown += f" ({prediction.predicted}?)"
            excerpt = prediction.text if len(prediction.text) <= 70 else prediction.text[:67] + "..."
            print(f"{shown}\t{prediction.confidence:.3f}\t{excerpt}")
    return 0


def verify_cache_command(args: argparse.Namespace) -> int:
    from finetune.cache import verify_cache

    bad = verify_cache(Path(args.repo), restore=not args.no_restore)
    verb = "removed" if args.no_restore else "removed and restored from the remote"
    print(f"{len(bad)} corrupted cache objects {verb}" if bad else "cache verified: every object matches its hash")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="label texts with an exported model")
    predict.add_argument("texts", nargs="*", help="texts to label ('-' or none: read --file or stdin)")
    predict.add_argument("--model", default="models/export", help="exported model folder (default: models/export)")
    predict.add_argument("--file", help="a text file, one text per line")
    predict.add_argument("--threshold", type=float, help="confidence below which to answer UNCERTAIN "
                         "(default: the model's uncertain_threshold)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--json", action="store_true", help="one JSON object per text")
    predict.set_defaults(handler=predict_command)
    verify = commands.add_parser("verify-cache", help="rehash DVC's cache; replace corrupted objects from the remote")
    verify.add_argument("--repo", default=".", help="repository root (default: .)")
    verify.add_argument("--no-restore", action="store_true", help="only remove corrupted objects")
    verify.set_defaults(handler=verify_cache_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.handler(args)
