"""The `vidpipe` command as a user runs it: help, one-line errors, exit codes, JSON summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VIDPIPE = str(Path(sys.executable).parent / "vidpipe")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VIDPIPE, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["make-corpus", "--help"], ["train", "--help"],
                                  ["classify", "--help"], ["export-uncertain", "--help"],
                                  ["report", "--help"]])
def test_help_exits_zero(args):
    done = run(*args)
    assert done.returncode == 0 and "usage: vidpipe" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["classify", "in", "out"], "--model"),
    (["make-corpus", "out", "--classes", "Dance"], "invalid choice"),
    (["make-corpus", "out", "--per-class", "0"], "must be >= 1"),
    (["train", "data", "--out", "m.pt", "--arch", "cnn4d"], "unknown architecture"),
    (["similar", "out", "v.mp4", "--k", "0"], "must be >= 1"),
    (["similar", "out", "v.mp4", "--segment", "-1"], "must be >= 0"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["export-uncertain", "out"], "--out"),
    (["export-uncertain", "out", "--out", "f.json", "--format", "xml"], "invalid choice"),
    (["report", "out", "--out", "r.html", "--segments", "0"], "must be >= 1"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    done = run(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["classify", "--help"], ["train", "--help"], ["scan", "--help"],
    ["classify", "in", "out"],  # no --model
    ["classify", "in", "out", "--model", "m.pt", "--batch-sise", "4"],
    ["train", "data", "--out", "m.pt", "--arch", "cnn4d"],
    ["train", "data", "--out", "m.pt", "--amp"],
    ["classify", "{missing}", "out", "--model", "m.pt"],  # INPUT does not exist
    ["classify", "{missing}", "out", "--model", "m.pt", "--no-embeddings"],
    ["similar", "--help"],
    ["similar", "{missing}", "v.mp4"],  # OUTPUT has no predictions: DuckDB and fsspec only
    ["export-uncertain", "--help"], ["report", "--help"],
    ["export-uncertain", "{missing}", "--out", "u.json"],  # reading an OUTPUT needs none of them
    ["report", "{missing}", "--out", "r.html"],
])
def test_help_and_rejected_input_import_no_torch_ray_or_mlflow(args, tmp_path: Path):
    # Importing them takes seconds on a small machine; a user who mistyped should not wait for it.
    script = ("import sys\nfrom pipeline.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'ray', 'mlflow'}))")
    args = [arg.format(missing=tmp_path / "missing") for arg in args]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_unreadable_input_is_one_line_and_exit_1(tmp_path: Path):
    for args in (["train", str(tmp_path / "missing"), "--out", str(tmp_path / "m.pt")],
                 ["classify", str(tmp_path), str(tmp_path / "out.parquet"),
                  "--model", str(tmp_path / "missing.pt")],
                 ["similar", str(tmp_path / "missing"), "v.mp4"]):
        done = run(*args)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("vidpipe: error: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr


def test_make_corpus_prints_a_json_summary(tmp_path: Path):
    done = run("make-corpus", str(tmp_path / "c"), "--classes", "MoveLeft", "RotateCW",
               "--per-class", "2", "--groups", "2", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["videos"] == 4 and summary["classes"] == ["MoveLeft", "RotateCW"]
    assert len(list((tmp_path / "c").glob("*/v_*_g0?_c0?.mp4"))) == 4


def test_version_and_what_vidpipe_does():
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("vidpipe 0.")
    top = run("--help")
    assert "classifies the actions in video archives" in top.stdout
    for command in ("classify", "train", "scan", "models", "promote"):
        assert command in top.stdout


def test_every_option_has_help_with_its_default():
    import argparse

    from pipeline.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    missing = []
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            if not action.help:
                missing.append(f"{name} {action.option_strings[0]}: no help")
            elif not (action.required or isinstance(action, argparse._StoreTrueAction)
                      or "default" in sub._get_formatter()._get_help_string(action)):
                missing.append(f"{name} {action.option_strings[0]}: no default")
        assert "(default: " in text
    assert missing == []
    train_help = commands["train"].format_help()
    assert "cnn3dbn_gru128" in train_help and "cnn2d_lstm32" in train_help  # --arch choices
    assert "(default: 15, or more on a small corpus" in " ".join(train_help.split())  # --epochs


def test_amp_reaches_the_training_settings_that_workers_get(capsys):
    from pipeline.cli import _settings, build_parser, main
    from pipeline.training import TrainSettings

    # In process: the `vidpipe` script may import another checkout of the package.
    assert main(["train", "data", "--out", "m.pt", "--amp"]) == 2  # a CPU run: usage, one line
    err = capsys.readouterr().err
    assert err == "vidpipe: error: --amp (mixed precision) is CUDA only and needs --gpus\n"

    parser = build_parser()
    args = parser.parse_args(["train", "data", "--out", "m.pt", "--gpus", "--amp"])
    settings = _settings(args)
    assert settings.amp and TrainSettings(**settings.__dict__).amp  # as train_distributed ships it
    assert not _settings(parser.parse_args(["train", "data", "--out", "m.pt"])).amp
    assert "needs --gpus" in " ".join(parser._subparsers._group_actions[0].choices["train"]
                                      .format_help().split())


@pytest.mark.parametrize("args, line", [
    # a typo of a required option: named, with the option meant, not "--model is required"
    (["classify", "in", "out", "--modle", "m.pt"],
     "unrecognized argument --modle; did you mean --model? (see 'vidpipe classify --help')"),
    (["train", "data", "--out", "m.pt", "--epohcs=3"],
     "unrecognized argument --epohcs=3; did you mean --epochs? (see 'vidpipe train --help')"),
    (["scan", "a", "o", "--model", "m.pt", "--frobnicate"],
     "unrecognized argument --frobnicate (see 'vidpipe scan --help')"),
    # usage errors point to the subcommand's help, not the top level's
    (["classify", "in", "out", "--model", "m.pt", "extra"],
     "unrecognized arguments: extra (see 'vidpipe classify --help')"),
    (["classify", "in", "out"], "the following arguments are required: --model "
                                "(see 'vidpipe classify --help')"),
])
def test_unknown_options_are_named_and_usage_points_to_the_subcommand_help(args, line, capsys):
    from pipeline.cli import main

    assert main(args) == 2
    assert capsys.readouterr().err == f"vidpipe: error: {line}\n"


def test_what_argparse_accepts_still_parses():
    from pipeline.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["classify", "i", "o", "--mod", "m.pt"]).model == "m.pt"  # a prefix
    assert parser.parse_args(["train", "d", "--out", "m.pt", "--seed", "-3"]).seed == -3
    assert parser.parse_args(["promote", "vidpipe", "2", "--reason", "better"]).version == 2
