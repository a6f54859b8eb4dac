"""vidpipe classifies the actions in video archives: train a 3D CNN + GRU classifier on a labelled
corpus (Ray Train, tracked in MLflow), then classify folders or S3 prefixes of videos into Parquet
(Ray Data), once or as nightly incremental scans.

Exit codes: 0 success, 1 the work failed (unreadable input, too many bad videos), 2 bad usage.
With --json the last line on stdout is a JSON summary. Errors are one line on stderr.
"""

# The parser and the error handling import nothing heavy (no torch, Ray, MLflow or storage), so
# `--help` and usage errors answer at once; each subcommand imports what it runs, after its
# arguments are checked. tests/test_cli.py checks what `--help` imports.

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import sys
from collections.abc import Callable

from . import infrastructure, synthetic
from .architectures import DEFAULT_ARCH, PAPER_ARCH, canonical_arch, list_models
from .errors import (CheckpointError, CorpusError, DecoderUnavailable, InvalidInput, LeaseHeld,
                     LeaseLost, LeaseUnsupported, PreflightError, RegistrationFailed,
                     TooManyErrors)
from .frames import (DECODER_CHOICES, DECODERS, DEFAULT_DECODER, DEFAULT_TIMEOUT_S,
                     VideoDecodeError)
from .infrastructure import InfrastructureError
from .progress import mark
from .ray_runtime import exit_if_ray_started_here, set_verbose
from .train_settings import REFERENCE_BATCH, TrainSettings


class UsageError(Exception):
    """Bad flags or arguments (exit 2)."""


class JobFailed(Exception):
    """The job ran but its result is not acceptable (exit 1)."""


# Errors that are the user's input or the environment's (storage answers with OSError, a node
# without ffmpeg with InfrastructureError), reported as one line; anything else is a bug and keeps
# its traceback (a bare ValueError included).
EXPECTED_ERRORS = (PreflightError, VideoDecodeError, CorpusError, CheckpointError, JobFailed,
                   TooManyErrors, RegistrationFailed, LeaseHeld, LeaseLost, LeaseUnsupported,
                   InvalidInput, InfrastructureError, OSError)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.required or not action.option_strings
                or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))):
            # `is`, not `in`: a default of 0 equals False and is still worth showing
            return text
        default = " ".join(action.default) if isinstance(action.default, list) else action.default
        return f"{text} (default: {default})".replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, not argparse's usage block
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None:  # the top level: its subcommand checks its own arguments
            return super().parse_known_args(args, namespace)
        # A subcommand names an unknown option itself, before argparse would report a required
        # option that the typo was meant to be, and points to its own --help for any leftover.
        if unknown := self._unknown_options(sys.argv[1:] if args is None else args):
            near = difflib.get_close_matches(unknown.split("=")[0], self._long_options(),
                                             n=1, cutoff=0.8)
            self.error(f"unrecognized argument {unknown}"
                       + (f"; did you mean {near[0]}?" if near else ""))
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _long_options(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings
                if name.startswith("--")]

    def _unknown_options(self, args: list[str]) -> str | None:
        """The first argument that looks like an option and is none of this parser's (nor a
        prefix of one, which argparse accepts); nothing after a bare `--`."""
        for arg in args:
            if arg == "--":
                return None
            if not arg.startswith("-") or arg == "-" or _NUMBER.fullmatch(arg):
                continue
            name = arg.split("=")[0]
            if name in self._option_string_actions:
                continue
            if name.startswith("--") and any(option.startswith(name) for option in self._long_options()):
                continue
            return arg
        return None


_NUMBER = re.compile(r"-\d+(\.\d*)?(e-?\d+)?")  # a negative value, not an option


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidpipe", description=__doc__.split("\n\n")[0],
                     epilog="Start with `make demo` (README.md); every subcommand has --help.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                        metavar="COMMAND")

    corpus = subcommands.add_parser("make-corpus", help="write a synthetic motion corpus (UCF50 layout)")
    corpus.add_argument("out", help="output folder or URI")
    corpus.add_argument("--classes", nargs="+", default=list(synthetic.DEFAULT_CLASSES),
                        choices=list(synthetic.MOTIONS), metavar="CLASS",
                        help=f"motion classes (choices: {', '.join(synthetic.MOTIONS)})")
    corpus.add_argument("--per-class", type=_positive_int, default=8, help="clips per class (default: 8)")
    corpus.add_argument("--groups", type=_positive_int, default=4,
                        help="recording groups per class (default: 4)")
    corpus.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    corpus.add_argument("--content-split", action="store_true",
                        help="write OUT/train (noise textures) and OUT/val (shape textures never "
                             "seen in training) for `vidpipe train OUT/train --val OUT/val`")
    corpus.add_argument("--val-per-class", type=_positive_int, default=None,
                        help="with --content-split: validation clips per class (default: per-class // 3)")
    _add_common(corpus)
    corpus.set_defaults(run=_make_corpus)

    train = subcommands.add_parser(
        "train", help="train a classifier with Ray Train; track it in MLflow, optionally register it")
    _add_training_data(train)
    train.add_argument("--out", required=True, help="checkpoint path to write")
    train.add_argument("--labels", default=None, metavar="MANIFEST",
                       help="a labelling manifest (export-uncertain --format manifest) once its "
                            "label column is filled: its segments join the training clips; rows "
                            "without a label are skipped, a label that is no class of DATA is an "
                            "error (default: none)")
    train.add_argument("--arch", default=DEFAULT_ARCH, type=_arch, metavar="ARCH",
                       help=f"model architecture (default: {DEFAULT_ARCH}; the paper's is "
                            f"{PAPER_ARCH}); choices: {', '.join(list_models())}")
    _add_training_settings(train)
    train.add_argument("--max-failures", type=int, default=1,
                       help="worker failures to recover from (from the last checkpoint)")
    train.add_argument("--storage-path", default=None,
                       help="Ray Train checkpoints (default: ray-train/ beside --out; shared storage "
                            "such as s3://... on a multi-node cluster)")
    train.add_argument("--name", default=None,
                       help="Ray Train run name (default: derived from the command, so a rerun resumes)")
    train.add_argument("--register", metavar="NAME", default=None,
                       help="register the model under NAME; it becomes `champion` only if, on held-out gate "
                            "clips neither model trained on, it beats chance, the most frequent "
                            "class and the current champion, else `challenger` "
                            "(default: not registered)")
    train.add_argument("--experiment", default="vidpipe-train", help="MLflow experiment")
    _add_common(train)
    _add_cluster(train)
    train.set_defaults(run=_train)

    evaluate = subcommands.add_parser(
        "evaluate", help="accuracy, top-5, per-class, confusion matrix and latency of a model on DATA")
    evaluate.add_argument("data", help="labelled corpus folder (UCF50 layout) or manifest")
    evaluate.add_argument("--model", required=True, help="REF (as for classify)")
    evaluate.add_argument("--window-seconds", type=_non_negative_float, default=None,
                          help="score one clip per window (clip level) and their mean per video "
                               "(video level); default: the model's training clip duration, 0: whole videos")
    evaluate.add_argument("--out", default=None,
                          help="folder for evaluation.json and the PNG plots (default: print only)")
    _add_common(evaluate)
    _add_cluster(evaluate)
    _add_decoder(evaluate)
    evaluate.set_defaults(run=_evaluate)

    ablation = subcommands.add_parser(
        "ablation", help="train the paper's model variants under identical settings and compare them")
    _add_training_data(ablation)
    ablation.add_argument("--archs", nargs="+", type=_arch, default=None,
                          help="variants to train (default: the paper's twelve of Tables 1-2 "
                               "and our three)")
    _add_training_settings(ablation)
    ablation.add_argument("--out", default="ablation", help="folder for the checkpoints and table")
    ablation.add_argument("--experiment", default="vidpipe-ablation", help="MLflow experiment")
    _add_common(ablation)
    _add_cluster(ablation)
    ablation.set_defaults(run=_ablation)

    classify = subcommands.add_parser(
        "classify", help="classify every video under INPUT with Ray Data into Parquet files in OUTPUT")
    classify.add_argument("input", help="folder, file or URI (s3://bucket/prefix) of videos")
    classify.add_argument("output", help="folder or URI for the Parquet files")
    classify.add_argument("--model", required=True,
                          help="REF: checkpoint path, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model")
    classify.add_argument("--window-seconds", type=_non_negative_float, default=None,
                          help="cut longer videos into consecutive windows of this length "
                               "(default: the clip duration the model was trained on; 0: whole videos)")
    classify.add_argument("--batch-size", type=_positive_int, default=16, help="clips per model call")
    classify.add_argument("--num-actors", type=_positive_int, default=None,
                          help="classify in a pool of N model actors fed by decode tasks (default: "
                               "one per GPU on a GPU cluster; on CPUs, every task decodes and "
                               "classifies its videos itself)")
    classify.add_argument("--error-threshold", type=_fraction, default=0.5,
                          help="fail (exit 1, after writing) when more than this share of videos is unreadable")
    classify.add_argument("--overwrite", action="store_true",
                          help="replace the result of an earlier classify in OUTPUT (default: refuse "
                               "a non-empty OUTPUT); readers never see old and new rows mixed")
    classify.add_argument("--rows-per-file", type=_positive_int, default=50_000,
                          help="prediction rows per Parquet file")
    _add_common(classify)
    _add_cluster(classify)
    _add_decoder(classify, gpu=True)
    _add_decode_timeout(classify)
    _add_embeddings(classify)
    classify.set_defaults(run=_classify)

    scan = subcommands.add_parser(
        "scan", help="classify what is new or changed in ARCHIVE since the last scan, exactly once, "
                     "into OUTPUT/predictions/scan_date=.../")
    scan.add_argument("archive", help="folder or URI (s3://bucket/prefix) of videos")
    scan.add_argument("output", help="folder or URI holding predictions/, the scan state and run records")
    scan.add_argument("--model", required=True,
                      help="REF: checkpoint path, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model")
    scan.add_argument("--date", type=_date, default=None, metavar="YYYY-MM-DD",
                      help="the scan_date partition the rows land in (default: today, UTC)")
    scan.add_argument("--dry-run", action="store_true",
                      help="list and compare with the state only: print what would be processed, write nothing")
    scan.add_argument("--reprocess-on-model-change", action="store_true",
                      help="also classify videos done by another model version (default: only new "
                           "or changed videos, whatever model did the old ones)")
    scan.add_argument("--window-seconds", type=_non_negative_float, default=None,
                      help="as for classify (default: the model's training clip duration; 0: whole videos)")
    scan.add_argument("--batch-size", type=_positive_int, default=16, help="clips per model call")
    scan.add_argument("--num-actors", type=_positive_int, default=None,
                      help="classify in a pool of N model actors fed by decode tasks (default: "
                           "one per GPU on a GPU cluster; on CPUs, every task decodes and "
                           "classifies its videos itself)")
    scan.add_argument("--error-threshold", type=_fraction, default=0.5,
                      help="fail (exit 1, after committing) when more than this share of the "
                           "planned videos is unreadable (undecodable, or a storage failure)")
    scan.add_argument("--rows-per-file", type=_positive_int, default=50_000,
                      help="prediction rows per Parquet file")
    scan.add_argument("--lease-seconds", type=_positive_float, default=300.0,
                      help="how long the OUTPUT lease outlives a scan that stops renewing it (killed)")
    _add_common(scan)
    _add_cluster(scan)
    _add_decoder(scan, gpu=True)
    _add_decode_timeout(scan)
    _add_embeddings(scan)
    scan.set_defaults(run=_scan)

    similar = subcommands.add_parser(
        "similar", help="the segments most like one segment of a video: nearest by the cosine "
                        "similarity of their embeddings (DuckDB over OUTPUT's Parquet)")
    similar.add_argument("output", help="a classify or scan OUTPUT (folder or s3://...)")
    similar.add_argument("video_uri", help="the video, as its rows name it (a local path may be "
                                           "given as a path)")
    similar.add_argument("--segment", type=_non_negative_int, default=0,
                         help="which of the video's segments (0-based window index)")
    similar.add_argument("--k", type=_positive_int, default=10, help="how many segments to list")
    _add_common(similar)
    similar.set_defaults(run=_similar)

    uncertain = subcommands.add_parser(
        "export-uncertain", help="the segments the model is least sure of (smallest margin between "
                                 "its top two classes), one per video where possible, for labelling")
    uncertain.add_argument("output", help="a scan or classify OUTPUT (folder or URI)")
    uncertain.add_argument("--out", required=True, help="file to write (path or URI)")
    uncertain.add_argument("--limit", type=_positive_int, default=100, help="segments to export")
    uncertain.add_argument("--since", type=_date, default=None, metavar="YYYY-MM-DD",
                           help="only segments of scans on or after this date (default: all)")
    uncertain.add_argument("--format", choices=("label-studio", "manifest"), default="label-studio",
                           help="Label Studio import JSON, or a CSV manifest (uri,start_s,end_s,"
                                "predicted,score,label,segment) whose label column a person fills "
                                "for `vidpipe train DATA --labels FILE`")
    _add_common(uncertain)
    uncertain.set_defaults(run=_export_uncertain)

    report = subcommands.add_parser(
        "report", help="one self-contained HTML page of OUTPUT's scans: class share per date, "
                       "drift, errors, throughput, scores, the least certain segments")
    report.add_argument("output", help="a scan or classify OUTPUT (folder or URI)")
    report.add_argument("--out", required=True, help="HTML file to write (path or URI)")
    report.add_argument("--segments", type=_positive_int, default=8,
                        help="least certain segments shown, each with its middle frame")
    _add_common(report)
    report.set_defaults(run=_report)

    models = subcommands.add_parser(
        "models", help="list the registered models: versions, aliases, validation accuracy")
    models.add_argument("name", nargs="?", default=None, help="only this registered model")
    models.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else ./mlflow.db)")
    _add_common(models)
    models.set_defaults(run=_models)

    promote = subcommands.add_parser(
        "promote", help="move the `champion` alias to VERSION of registered model NAME")
    promote.add_argument("name", help="registered model name")
    promote.add_argument("version", type=_positive_int, help="the version to make champion")
    promote.add_argument("--reason", default="", help="why (recorded as an MLflow tag; default: none)")
    promote.add_argument("--mlflow-uri", default=None,
                         help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else ./mlflow.db)")
    _add_common(promote)
    promote.set_defaults(run=_promote)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. Called as this process's own command line (argv None: the
    `vidpipe` script, `python -m pipeline.cli`), a process that started its own local Ray ends
    right after the command (ray_runtime.exit_if_ray_started_here) rather than returning."""
    code = _command(argv)
    if argv is None:
        exit_if_ray_started_here(code)
    return code


def _command(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        mark("parsed")
        set_verbose(getattr(args, "verbose", False))
        from . import storage

        storage.configure(endpoint_url=args.s3_endpoint_url)  # once, for this process and its Ray
        # MLflow's client retries an unreachable server for about 4 minutes by default; the
        # preflight probe has already waited for it, so later calls give up after seconds.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        summary = args.run(args)
    except (UsageError, DecoderUnavailable) as exc:  # the second is known once Ray runs
        print(f"vidpipe: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vidpipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if (expected := _expected(exc)) is None:
            raise
        print(f"vidpipe: error: {_one_line(expected)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, default=str))
    return 0


# --- subcommands ----------------------------------------------------------------------------


def _make_corpus(args) -> dict:
    say = _reporter(args)
    uris = synthetic.make_corpus(args.out, tuple(args.classes), args.per_class, args.groups,
                                 args.seed, content_split=args.content_split,
                                 val_per_class=args.val_per_class)
    say(f"wrote {len(uris)} videos ({len(args.classes)} classes) to {args.out}")
    return {"videos": len(uris), "classes": args.classes, "output": args.out}


def _train(args) -> dict:
    settings = _settings(args)
    from . import preflight
    from .tracking import tracking_uri

    say = _reporter(args)
    try:
        preflight.check_mlflow(tracking_uri(args.mlflow_uri), must_exist=False, say=say)
    except PreflightError as exc:
        if args.register:  # registering is the point of the run: do not train for nothing
            raise
        say(f"warning: {exc}; training without tracking")

    from .train_job import TrainRequest, run_training

    request = TrainRequest(
        data=args.data, val=args.val, out=args.out, arch=args.arch, settings=settings,
        frames=args.frames, size=args.size,
        val_fraction=args.val_fraction, workers=args.workers, use_gpu=args.gpus,
        max_failures=args.max_failures, storage_path=args.storage_path, name=args.name,
        cache=args.cache, window_seconds=args.window_seconds, labels=args.labels,
        register=args.register,
        experiment=args.experiment, mlflow_uri=args.mlflow_uri, ray_address=args.ray_address)
    with preflight.output_file(args.out):  # last: a failed check creates no folder
        return run_training(request, say)


def _export_uncertain(args) -> dict:
    from .uncertain import export_uncertain

    summary = export_uncertain(args.output, args.out, args.limit, args.since, args.format)
    _reporter(args)(f"wrote {summary['segments']} segments of {summary['videos']} videos to "
                    f"{args.out} (largest margin {summary['max_margin']:.3f})")
    return summary


def _report(args) -> dict:
    from .report import write_report

    summary = write_report(args.output, args.out, args.segments)
    _reporter(args)(f"wrote the report of {summary['runs']} runs and {summary['rows']} rows to "
                    f"{args.out}")
    return summary


def _evaluate(args) -> dict:
    from . import preflight

    preflight.check_model_ref(args.model, args.mlflow_uri, say=_reporter(args))
    from .evaluation import run_evaluation

    with preflight.output_folder(args.out) if args.out else contextlib.nullcontext():
        return run_evaluation(args.data, args.model, out=args.out,
                              window_seconds=args.window_seconds, mlflow_uri=args.mlflow_uri,
                              ray_address=args.ray_address, say=_reporter(args),
                              decoder=args.decoder)


def _ablation(args) -> dict:
    args.settings = _settings(args)
    from .ablation import run_ablation

    summary = run_ablation(args, say=_reporter(args))
    print(summary["table"])  # the markdown table is the product: stdout
    return summary


def _classify(args) -> dict:
    from . import preflight

    say = _reporter(args)
    preflight.check_input(args.input)
    preflight.check_model_ref(args.model, args.mlflow_uri, say=say)
    from .inference import classify

    mark("imported")
    # OUTPUT last (the one check that creates something); a failed command removes it again
    # while it is empty, e.g. when the registry has no such model.
    with preflight.output_folder(args.output, overwrite=args.overwrite):
        summary = classify(args.input, args.output, args.model,
                           window_seconds=args.window_seconds, batch_size=args.batch_size,
                           num_actors=args.num_actors, error_threshold=args.error_threshold,
                           mlflow_uri=args.mlflow_uri, ray_address=args.ray_address,
                           decoder=args.decoder, decode_timeout_s=args.decode_timeout,
                           rows_per_file=args.rows_per_file, embeddings=args.embeddings,
                           say=say)
    mark("committed")
    say(f"{summary['videos']} videos, {summary['segments']} segments, {summary['errors']} errors "
        f"in {summary['wall_s']:.1f}s ({summary['videos_per_s']:.2f} videos/s) -> {summary['output']}"
        + _fallback_note(summary))
    return summary


def _similar(args) -> dict:
    from .similar import similar

    found = similar(args.output, args.video_uri, args.segment, args.k)
    if not args.json:  # the list is the product: stdout
        print(f"nearest to {found['video_uri']} segment {found['segment']} "
              f"({found['model_name']} {found['model_version']}):")
        for n in found["neighbours"]:
            print(f"{n['similarity']:.4f}  {n['video_uri']}  segment {n['segment']} "
                  f"({n['start_s']:.1f}-{n['end_s']:.1f} s)  {n['label']} {n['score']:.2f}")
    return found


def _fallback_note(summary: dict) -> str:
    """How many videos an NVDEC run decoded on the CPU instead; nothing for other decoders."""
    if summary.get("decoder") != "nvdec":
        return ""
    return f"; decoded on NVDEC, {summary['decode_fallbacks']} videos fell back to the CPU"


def _scan(args) -> dict:
    from . import preflight

    say = _reporter(args)
    preflight.check_input_exists(args.archive, "ARCHIVE")
    preflight.check_model_ref(args.model, args.mlflow_uri, say=say)
    from .scan import ScanRequest, run_scan

    request = ScanRequest(
        archive=args.archive, output=args.output, model=args.model, scan_date=args.date,
        dry_run=args.dry_run, reprocess_on_model_change=args.reprocess_on_model_change,
        window_seconds=args.window_seconds, batch_size=args.batch_size, num_actors=args.num_actors,
        error_threshold=args.error_threshold, rows_per_file=args.rows_per_file,
        lease_seconds=args.lease_seconds, mlflow_uri=args.mlflow_uri, ray_address=args.ray_address,
        decoder=args.decoder, decode_timeout_s=args.decode_timeout, embeddings=args.embeddings)
    if args.dry_run:  # writes nothing
        return run_scan(request, say)
    with preflight.output_folder(args.output):  # as for classify
        return run_scan(request, say)


def _models(args) -> dict:
    from . import preflight
    from .registry import format_models, list_models
    from .tracking import tracking_uri

    uri = tracking_uri(args.mlflow_uri)
    preflight.check_mlflow(uri, must_exist=True, say=_reporter(args))
    models = list_models(uri, args.name)
    if not args.json:
        print(format_models(models, uri))
    return {"mlflow_uri": preflight.redact_uri(uri), "models": models}


def _promote(args) -> dict:
    from . import preflight
    from .registry import promote
    from .tracking import tracking_uri

    uri = tracking_uri(args.mlflow_uri)
    preflight.check_mlflow(uri, must_exist=True, say=_reporter(args))
    summary = promote(uri, args.name, str(args.version), reason=args.reason)
    previous = f"v{summary['previous']}" if summary["previous"] else "no champion"
    _reporter(args)(f"{args.name}: champion is now v{summary['version']} (was {previous})")
    return summary


# --- helpers --------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--s3-endpoint-url", default=None,
                        help="S3 endpoint (default: AWS_ENDPOINT_URL; credentials: the AWS chain)")


def _add_decoder(parser: argparse.ArgumentParser, gpu: bool = False) -> None:
    if not gpu:  # evaluate decodes on the CPUs
        parser.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER,
                            help="video decoding: pyav (in process, decodes only the sampled "
                                 "frames; default) or ffmpeg (one ffmpeg CLI process per video)")
        return
    parser.add_argument("--decoder", choices=DECODER_CHOICES, default="auto",
                        help="video decoding: auto (NVDEC on the GPU workers where it works, else "
                             "pyav; default), pyav (in process on CPUs, decodes only the sampled "
                             "frames), ffmpeg (one ffmpeg CLI process per video) or nvdec (the "
                             "GPUs' decoders, with a per-video CPU fallback counted in the "
                             "summary; a usage error without GPU workers)")


def _add_decode_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decode-timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S,
                        metavar="SECONDS",
                        help="a video whose decoding takes longer than this per started minute of "
                             "video (counted from its frames, not its header) gets an error row "
                             f"(default {DEFAULT_TIMEOUT_S:g})")


def _add_embeddings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-embeddings", dest="embeddings", action="store_false",
                        help="leave out the rows' `embedding` column (the model's clip "
                             "representation, which `vidpipe similar` searches; default: written)")


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster ('auto' or host:port; default RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI (default MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own INFO logs (start-up, dataset execution, Ray Train)")


def _add_training_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="corpus folder (UCF50 layout) or manifest (.csv/.parquet)")
    parser.add_argument("--val", help="validation corpus; default: a group-aware split of DATA")
    parser.add_argument("--val-fraction", type=_fraction, default=0.25,
                        help="share of groups held out when --val is not given")
    parser.add_argument("--cache", default=None, metavar="URI",
                        help="clip cache (folder or s3://...): later runs with the same videos and sampling skip "
                             "decoding (default: no cache)")


def _add_training_settings(parser: argparse.ArgumentParser) -> None:
    defaults = TrainSettings()
    parser.add_argument("--epochs", type=_positive_int, default=None,
                        help=f"passes over the training clips, exactly; the epoch best on validation "
                             f"is kept (default: {defaults.epochs}, or more on a small corpus: as many "
                             f"as make {defaults.min_steps} optimizer steps)")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                        help=f"clips per worker per step (default: {defaults.batch_size})")
    parser.add_argument("--lr", type=_positive_float, default=defaults.lr,
                        help=f"peak learning rate per {REFERENCE_BATCH} clips, scaled linearly with the "
                             f"global batch (batch size x workers) up to 16 clips, flat beyond "
                             f"(default: {defaults.lr:g})")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=defaults.weight_decay,
                        help=f"AdamW weight decay (default: {defaults.weight_decay:g})")
    parser.add_argument("--warmup-epochs", type=_non_negative_float, default=defaults.warmup_epochs,
                        help=f"linear learning-rate warm-up before the cosine decay "
                             f"(default: {defaults.warmup_epochs:g})")
    parser.add_argument("--temporal-jitter", type=_below_one, default=defaults.temporal_jitter,
                        help="training clips take their frames over a random stretch of between "
                             "1 - this and all of the clip (start and speed jitter; 0: off) "
                             f"(default: {defaults.temporal_jitter:g})")
    parser.add_argument("--frames", type=_positive_int, default=20,
                        help="frames sampled per clip (default: 20)")
    parser.add_argument("--size", type=_positive_int, default=64,
                        help="frame height and width in pixels (default: 64)")
    parser.add_argument("--window-seconds", type=_positive_float, default=None,
                        help="one training clip per window of long videos (default: one per video)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the split, initial weights and augmentation (default: 0)")
    parser.add_argument("--workers", type=_positive_int, default=1, help="Ray Train workers (DDP)")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker (the cluster must have them)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on the GPU workers (float16 autocast with loss "
                             "scaling); CUDA only: needs --gpus, and without it is a usage error "
                             "(default: float32)")


def _settings(args) -> TrainSettings:
    if args.amp and not args.gpus:  # before Ray starts: the workers would train in float32
        raise UsageError("--amp (mixed precision) is CUDA only and needs --gpus")
    epochs = {"epochs": args.epochs, "min_steps": 0} if args.epochs else {}  # exactly N when asked
    return TrainSettings(**epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                         temporal_jitter=args.temporal_jitter, seed=args.seed, amp=args.amp)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vidpipe")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _reporter(args) -> Callable[[str], None]:
    # Human progress goes to stderr so that stdout stays clean for --json.
    return lambda message: print(message, file=sys.stderr, flush=True)


def _expected(exc: Exception) -> BaseException | None:
    """The expected error `exc` is, or wraps (Ray task errors carry the original as `cause`, and
    their text is a remote traceback); None for a bug."""
    if (node_failure := infrastructure.find(exc)) is not None:
        return node_failure
    inner = getattr(exc, "cause", None)
    if isinstance(inner, EXPECTED_ERRORS):
        return inner
    return exc if isinstance(exc, EXPECTED_ERRORS) else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _below_one(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 0 and < 1, got {text}")
    return value


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None


def _arch(text: str) -> str:
    try:
        return canonical_arch(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
