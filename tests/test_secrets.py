"""No secret anywhere: with distinctive fake credentials (AWS keys; an MLflow user:password@ URI
against a real `mlflow server` with basic auth), train, register and classify through the CLI, then
search every output for them: the commands' output, the Ray session directory (Ray Train's exported
state included), the Ray Train storage, Parquet, the MLflow store, its artifacts and its log.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.mlflow_server import running_mlflow_server

from pipeline.synthetic import make_corpus

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_USER = "vidpipe-secret-user"
MLFLOW_PASSWORD = "Pw-7f3c9e1d-NOT-A-REAL-SECRET"
AWS_KEY_ID = "AKIAVIDPIPEFAKE7Q2Z"
AWS_SECRET = "vidpipeFakeSecret/9xQ2+Lk4Tz8WmN3bR6pY1hC5vD0sE7gA"
NEEDLES = {
    "MLflow password": MLFLOW_PASSWORD.encode(),
    "MLflow basic-auth header": base64.b64encode(f"{MLFLOW_USER}:{MLFLOW_PASSWORD}".encode()),
    "AWS secret key": AWS_SECRET.encode(),
}


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory):
    """A real `mlflow server --app-name basic-auth` whose admin has the fake credentials."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = tmp_path_factory.mktemp("mlflow-auth-config") / "auth.ini"  # holds the password: not searched
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{root / 'auth.db'}\n"
                      f"admin_username = {MLFLOW_USER}\nadmin_password = {MLFLOW_PASSWORD}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    with running_mlflow_server(
            root, ("--app-name", "basic-auth"), start_timeout=180,
            env={"MLFLOW_AUTH_CONFIG_PATH": str(config),
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-of-the-test-server"}) as port:
        yield {"host": f"127.0.0.1:{port}", "root": root}


def _hits(folder: Path) -> list[str]:
    """'what in which file' for every needle found in any file under `folder`."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found += [f"{what} in {path}" for what, needle in NEEDLES.items() if needle in data]
    return found


@pytest.mark.slow
def test_no_secret_in_any_output(auth_mlflow, s3_endpoint, s3fs_client, tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), classes=("MoveLeft", "MoveRight"), per_class=4, groups=2, seed=3)
    s3fs_client.mkdir("secret-videos")
    s3fs_client.put(str(corpus / "MoveLeft"), "secret-videos/in/", recursive=True)
    ray_tmp = Path("/tmp") / f"vp-secrets-{os.getpid()}"  # short: Ray's socket paths are limited
    uri = f"http://{MLFLOW_USER}:{MLFLOW_PASSWORD}@{auth_mlflow['host']}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
           "MLFLOW_TRACKING_URI": uri, "RAY_TMPDIR": str(ray_tmp),
           # Ray writes its export events (jobs, actors, Ray Train runs with their
           # train_loop_config) only when asked: ask, so they are on disk to be searched.
           "RAY_enable_export_api_write": "1"}
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    script = (  # one driver, one Ray: train with the URI from the environment, classify with it
        "import sys\nfrom pipeline.cli import main\n"  # on the command line
        f"code = main(['train', {str(corpus)!r}, '--out', {str(tmp_path / 'model.pt')!r},"
        " '--epochs', '2', '--frames', '8', '--size', '32', '--register', 'secret-model'])\n"
        "if code: sys.exit(code)\n"
        "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run(
        [sys.executable, "-c", script, "classify", "s3://secret-videos/in",
         "s3://secret-videos/out", "--model", "models:/secret-model/1",
         "--mlflow-uri", uri, "--window-seconds", "0"],
        capture_output=True, cwd=tmp_path, env=env, timeout=1500)
    output = done.stdout + done.stderr
    try:
        assert done.returncode == 0, output.decode(errors="replace")[-4000:]
        # 2 recording groups leave the gate none of its own: v1 is `challenger`, said why.
        assert b"registered secret-model v1 as challenger: not promoted: no gate clips" in output
        assert b"warning: MLflow" not in output  # the workers had the credentials too
        from mlflow import MlflowClient  # the epoch metrics reached the server: credentials worked
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            MLFLOW_USER, MLFLOW_PASSWORD)
        server = f"http://{auth_mlflow['host']}"  # the registry too, not a store from the env
        client = MlflowClient(tracking_uri=server, registry_uri=server)
        run_id = client.get_model_version("secret-model", "1").run_id
        assert len(client.get_metric_history(run_id, "loss")) == 2

        s3_out = tmp_path / "s3-out"
        s3fs_client.get("secret-videos/out", str(s3_out), recursive=True)
        assert list(s3_out.rglob("*.parquet"))
        exported = [path for path in ray_tmp.rglob("export_events/*") if path.stat().st_size]
        assert exported, "Ray wrote no export events to search"
        leaks = [f"{what} in the commands' output" for what, needle in NEEDLES.items()
                 if needle in output]
        for folder in (tmp_path, ray_tmp, auth_mlflow["root"]):
            leaks += _hits(folder)
        assert not leaks, "\n".join(leaks)
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
