"""The `vidpipe` command: argument parsing and one-line errors; each subcommand calls the library.

Exit codes: 0 success, 1 the work failed (unreadable input, too many bad videos), 2 bad usage.
With --json the last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from . import synthetic
from .corpus import CorpusError, read_corpus, split_by_group
from .frames import VideoDecodeError
from .inference import TooManyErrors
from .models import DEFAULT_ARCH, canonical_arch
from .models.checkpoint import CheckpointError, ModelConfig, save_checkpoint


class UsageError(Exception):
    """Bad flags or arguments (exit 2)."""


class JobFailed(Exception):
    """The job ran but its result is not acceptable (exit 1)."""


# Errors that are the user's input, reported as one line; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (VideoDecodeError, CorpusError, CheckpointError, JobFailed, TooManyErrors,
                   FileNotFoundError, PermissionError, ValueError)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidpipe", description=__doc__.splitlines()[0])
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    corpus = subcommands.add_parser("make-corpus", help="write a synthetic motion corpus (UCF50 layout)")
    corpus.add_argument("out", help="output folder or URI")
    corpus.add_argument("--classes", nargs="+", default=list(synthetic.DEFAULT_CLASSES),
                        choices=list(synthetic.MOTIONS), metavar="CLASS",
                        help=f"motion classes (choices: {', '.join(synthetic.MOTIONS)})")
    corpus.add_argument("--per-class", type=_positive_int, default=8)
    corpus.add_argument("--groups", type=_positive_int, default=4, help="recording groups per class")
    corpus.add_argument("--seed", type=int, default=0)
    _add_common(corpus)
    corpus.set_defaults(run=_make_corpus)

    train = subcommands.add_parser("train", help="train a classifier on a labelled corpus")
    train.add_argument("data", help="corpus folder (UCF50 layout) or manifest (.csv/.parquet)")
    train.add_argument("--val", help="validation corpus; default: a group-aware split of DATA")
    train.add_argument("--out", required=True, help="checkpoint path to write")
    train.add_argument("--arch", default=DEFAULT_ARCH, type=_arch)
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=4)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--frames", type=_positive_int, default=20)
    train.add_argument("--size", type=_positive_int, default=64)
    train.add_argument("--val-fraction", type=float, default=0.25)
    train.add_argument("--seed", type=int, default=0)
    _add_common(train)
    train.set_defaults(run=_train)

    classify = subcommands.add_parser(
        "classify", help="classify every video under INPUT with Ray Data into Parquet files in OUTPUT")
    classify.add_argument("input", help="folder, file or URI (s3://bucket/prefix) of videos")
    classify.add_argument("output", help="folder or URI for the Parquet files")
    classify.add_argument("--model", required=True,
                          help="REF: checkpoint path, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model")
    classify.add_argument("--window-seconds", type=_positive_float, default=None,
                          help="cut longer videos into consecutive windows of this length")
    classify.add_argument("--batch-size", type=_positive_int, default=16, help="clips per model call")
    classify.add_argument("--num-actors", type=_positive_int, default=None,
                          help="classifier actors (default: half the cluster's CPUs, or one per GPU)")
    classify.add_argument("--error-threshold", type=_fraction, default=0.5,
                          help="fail (exit 1, after writing) when more than this share of videos is unreadable")
    _add_common(classify)
    _add_cluster(classify)
    classify.set_defaults(run=_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        summary = args.run(args)
    except UsageError as exc:
        print(f"vidpipe: error: {exc}", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as exc:
        print(f"vidpipe: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vidpipe: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


# --- subcommands ----------------------------------------------------------------------------


def _make_corpus(args) -> dict:
    say = _reporter(args)
    uris = synthetic.make_corpus(args.out, tuple(args.classes), args.per_class, args.groups,
                                 args.seed, endpoint_url=args.s3_endpoint_url)
    say(f"wrote {len(uris)} videos ({len(args.classes)} classes) to {args.out}")
    return {"videos": len(uris), "classes": args.classes, "output": args.out}


def _train(args) -> dict:
    from .training import TrainSettings, fit, load_clips

    say = _reporter(args)
    corpus = read_corpus(args.data, args.s3_endpoint_url)
    if args.val:
        val_corpus = read_corpus(args.val, args.s3_endpoint_url)
        train_videos, val_videos = list(corpus.videos), list(val_corpus.videos)
        class_names = tuple(sorted(set(corpus.class_names) | set(val_corpus.class_names)))
    else:
        train_videos, val_videos = split_by_group(corpus.videos, args.val_fraction, args.seed)
        class_names = corpus.class_names
    config = ModelConfig(arch=args.arch, class_names=class_names, frames=args.frames, size=args.size)
    train = load_clips(train_videos, class_names, args.frames, args.size)
    val = load_clips(val_videos, class_names, args.frames, args.size)
    for uri, reason in train.skipped + val.skipped:
        say(f"skipped {uri}: {reason}")
    say(f"training {args.arch} on {len(train.clips)} clips, validating on {len(val.clips)}")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed)

    def report(stats):
        val_text = f" val_acc={stats.val_accuracy:.3f}" if stats.val_accuracy is not None else ""
        say(f"epoch {stats.epoch}: loss={stats.loss:.4f} acc={stats.accuracy:.3f}{val_text} "
            f"clips/s={stats.clips_per_s:.1f}")

    model, history = fit(config, train, val, settings, on_epoch=report)
    last = history[-1]
    config = ModelConfig(**{**config.__dict__, "extra": {"val_accuracy": last.val_accuracy}})
    save_checkpoint(model, config, args.out)
    say(f"checkpoint written to {args.out}")
    return {"checkpoint": args.out, "arch": config.arch, "classes": list(class_names),
            "train_clips": len(train.clips), "val_clips": len(val.clips),
            "val_accuracy": last.val_accuracy, "epochs": [stats.__dict__ for stats in history]}


def _classify(args) -> dict:
    from .inference import classify

    say = _reporter(args)
    summary = classify(args.input, args.output, args.model, window_seconds=args.window_seconds,
                       batch_size=args.batch_size, num_actors=args.num_actors,
                       error_threshold=args.error_threshold, endpoint_url=args.s3_endpoint_url,
                       mlflow_uri=args.mlflow_uri, ray_address=args.ray_address)
    say(f"{summary['videos']} videos, {summary['segments']} segments, {summary['errors']} errors "
        f"in {summary['wall_s']:.1f}s ({summary['videos_per_s']:.2f} videos/s) -> {summary['output']}")
    return summary


# --- helpers --------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--s3-endpoint-url", default=None,
                        help="S3 endpoint (default: AWS_ENDPOINT_URL; credentials: the AWS chain)")


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster ('auto' or host:port; default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else ./mlflow.db)")


def _reporter(args) -> Callable[[str], None]:
    # Human progress goes to stderr so that stdout stays clean for --json.
    return lambda message: print(message, file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _arch(text: str) -> str:
    try:
        return canonical_arch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
