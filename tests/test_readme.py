"""The README's command blocks run verbatim, so the docs cannot drift from the commands.

Every ```bash block in README.md is marked by the HTML comment on the line before it:
`<!-- runnable ... -->` (this test runs it, as written, with bash -e) or `<!-- template: why -->`
(placeholders such as ARCHIVE or "...", or `make test` itself). The runnable blocks run in order
in one scratch copy of the repository (its tracked files, and the real .venv linked in), after a
small `make demo` (`python -m pipeline.demo` with fewer videos and epochs: what the blocks need
from it is its layout, not its accuracy). The S3 block runs against the session's loopback S3
server (AWS_ENDPOINT_URL, set in tests/fixtures/s3.py), with an `archive` bucket made here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKED_BLOCK = re.compile(r"(?:<!-- (?P<kind>runnable|template)(?P<note>[^>]*)-->\n)?"
                          r"```(?P<lang>\w*)\n(?P<code>.*?)```", re.S)


def readme_blocks() -> list[dict]:
    return [match.groupdict() for match in MARKED_BLOCK.finditer((ROOT / "README.md").read_text())]


def runnable_blocks() -> list[str]:
    return [block["code"] for block in readme_blocks()
            if block["lang"] == "bash" and block["kind"] == "runnable"]


def test_every_bash_block_is_marked_runnable_or_template():
    bash = [block for block in readme_blocks() if block["lang"] == "bash"]
    assert bash and all(block["kind"] for block in bash), \
        [block["code"][:60] for block in bash if not block["kind"]]
    templates = [block for block in bash if block["kind"] == "template"]
    assert all(block["note"].strip(" :") for block in templates)  # says why it is not run
    assert len(runnable_blocks()) >= 4


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, s3fs_client, motion_corpus) -> Path:
    """A scratch clone after a small demo; the S3 archive the S3 block reads."""
    clone = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    os.symlink(Path(sys.executable).parents[1], clone / ".venv")
    demo = subprocess.run([sys.executable, "-m", "pipeline.demo", "--out", "demo-output",
                           "--per-class", "3", "--epochs", "1"], cwd=clone, capture_output=True,
                          text=True, timeout=1200)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    s3fs_client.mkdir("archive")
    for source in sorted(motion_corpus.glob("MoveUp/*.mp4"))[:3]:
        s3fs_client.pipe(f"archive/videos/{source.name}", source.read_bytes())
    shutil.rmtree("/tmp/predictions", ignore_errors=True)  # the cluster block's OUTPUT
    return clone


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_readme_block_runs_verbatim(workspace, index):
    code = runnable_blocks()[index]
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    try:
        done = subprocess.run(["bash", "-e", "-c", code], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=1800)
    finally:
        if "cluster/local/start.sh" in code:  # a failed block must not leave its cluster running
            subprocess.run(["bash", "cluster/local/stop.sh"], cwd=workspace, env=env,
                           capture_output=True, timeout=120)
    assert done.returncode == 0, f"{code}\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    # No traceback on any line, those Ray forwards from its workers ("(ListFiles pid=N) ...")
    # included: a worker that failed is a failure even when the command still exits 0.
    lines = done.stderr.splitlines()
    tracebacks = [number for number, line in enumerate(lines) if "Traceback" in line]
    assert not tracebacks, f"{code}\n" + "\n".join(lines[tracebacks[0]:tracebacks[0] + 40])


ARROW_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "float32": "float",
               "float64": "double", "list<string>": "list<item: string>",
               "list<float32>": "list<item: float>", "timestamp(us, UTC)": "timestamp[us, tz=UTC]"}


@pytest.mark.parametrize("document", ["README.md", "docs/design.md"])
def test_prediction_schema_tables_match_the_code(document):
    """The prediction-schema table (hand-written, for readers) names every column of
    rows.PREDICTION_SCHEMA in order, with its type; a row may name several columns."""
    from pipeline.rows import PREDICTION_SCHEMA

    text = (ROOT / document).read_text()
    table = text[text.index("| column | type | meaning |"):].split("\n\n")[0].splitlines()[2:]
    columns = []
    for row in table:
        names, types = (cell.strip() for cell in row.strip("|").split("|")[:2])
        names = [name.strip() for name in names.split(",")]
        # "list<string>, list<float32>" gives each name its own type; others are shared
        types = types.split(", ") if types.startswith("list<") else [types] * len(names)
        columns += [(name, ARROW_TYPES[kind]) for name, kind in zip(names, types, strict=True)]
    assert columns == [(field.name, str(field.type)) for field in PREDICTION_SCHEMA]
