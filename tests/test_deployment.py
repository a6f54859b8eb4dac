"""The deployment configs in cluster/ parse, have the shape their controllers expect, pin their
images, carry no secrets, and every command they run is accepted by the real argument parsers.

Commands are checked, not run: each `vidpipe SUB ...`, `python .../jobs/X.py ...` and `ray ...`
found in the YAML files (RayJob entrypoints, container commands, `ray up` command lists, ConfigMap
templates), the crontab and the Dockerfile is split like a shell would (shlex) and handed to
`pipeline.cli.build_parser()` or to Ray's own click commands. A renamed or misspelt flag, a
missing required argument or a job entrypoint that no longer exists fails here, not at 02:00.

Fast: no Ray, no container, no cluster is started.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from pipeline.cli import UsageError, build_parser

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
DOCKERFILE = CLUSTER / "Dockerfile"
CRONTAB = CLUSTER / "crontab"
README = CLUSTER / "README.md"

# The date a command is checked with wherever a config computes one at run time.
SAMPLE_DATE = "2026-12-01"
# Template placeholders (filled in by the config's own tooling before use) -> what to check with.
PLACEHOLDERS = {"__SCAN_DATE__": SAMPLE_DATE}

# jobs/X.py -> the `vidpipe` subcommand it takes the arguments of (test_job_entrypoint_* checks
# each claim against the job file itself).
JOB_SUBCOMMANDS = {"batch_classify": "classify", "retrain": "train", "nightly_scan": "scan"}

NAMESPACE = "vidpipe"
KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("batch/v1", "CronJob"),
    ("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCronJob"),
}
CLUSTER_SCOPED = {"Namespace"}
# RayCronJob spec fields of KubeRay 1.6/1.7. Anything else (e.g. a CronJob-style concurrencyPolicy)
# would be pruned by the API server without a word: a safety that silently is not there.
RAYCRONJOB_FIELDS = {"schedule", "jobTemplate", "suspend", "timeZone"}

SENSITIVE_NAME = re.compile(r"PASSWORD|SECRET|(^|_)TOKEN$|ACCESS_KEY|SESSION_KEY|API_KEY|CREDENTIAL")
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def constraint_pin(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if name.lower() == package.lower() and version:
            return version
    raise AssertionError(f"constraints.txt pins no {package}")


RAY_VERSION = constraint_pin("ray")
PROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# --- loading ----------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted({*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")})


def rel(path: Path) -> str:
    return str(path.relative_to(CLUSTER))


def fill_placeholders(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


@dataclass
class Document:
    source: str          # file under cluster/, with "#key" for a template inside a ConfigMap
    body: dict
    raw: str = ""        # the template text before its placeholders were filled (templates only)


def documents() -> list[Document]:
    """Every YAML document under cluster/, and every YAML template a ConfigMap carries."""
    found = []
    for path in yaml_files():
        for body in yaml.safe_load_all(path.read_text()):
            if body is None:
                continue
            assert isinstance(body, dict), f"{rel(path)}: a document is not a mapping"
            found.append(Document(rel(path), body))
            if body.get("kind") == "ConfigMap":
                for key, text in (body.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        for inner in yaml.safe_load_all(fill_placeholders(text)):
                            if inner is not None:
                                found.append(Document(f"{rel(path)}#{key}", inner, raw=text))
    return found


def k8s_documents() -> list[Document]:
    return [doc for doc in documents() if "apiVersion" in doc.body]


def ray_up_configs() -> list[Document]:
    return [doc for doc in documents() if "cluster_name" in doc.body and "provider" in doc.body]


def of_kind(kind: str) -> list[Document]:
    return [doc for doc in k8s_documents() if doc.body.get("kind") == kind]


def walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def pod_specs(body: dict) -> list[dict]:
    return [node for _, node in walk(body) if isinstance(node, dict) and isinstance(node.get("containers"), list)]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def rayjob_spec(doc: Document) -> dict:
    """The RayJob spec of a RayJob, or the one a RayCronJob stamps out (flat, or under .spec)."""
    if doc.body["kind"] == "RayJob":
        return doc.body["spec"]
    template = doc.body["spec"]["jobTemplate"]
    return template["spec"] if "spec" in template and "entrypoint" not in template else template


# --- commands -----------------------------------------------------------------------------------


@dataclass
class Invocation:
    source: str
    program: str                    # "vidpipe", "jobs/retrain.py", "ray job submit", ...
    argv: tuple = ()                # the arguments after the program
    env: dict = field(default_factory=dict)
    error: str | None = None        # set when the command could not even be extracted

    @property
    def id(self) -> str:
        return f"{self.source}:{self.program}"


SHELLS = {"sh", "bash", "dash"}
REDIRECTS = {">", ">>", "<", ">&", "<&", "&>", ">|", "&>>"}
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
DATE_COMMAND = re.compile(r"^date(\s+(-u|--utc))?\s+['\"]?\+(%F|%Y-%m-%d)['\"]?$")


def replace_command_substitutions(text: str) -> str:
    """`$(date -u +%F)` -> the sample date (only that format: one id per day, nothing finer);
    any other `$(...)` -> an opaque word (they never produce vidpipe arguments here)."""
    out, i = [], 0
    while (start := text.find("$(", i)) >= 0:
        depth, end = 0, start + 1
        while end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
            end += 1
        inner = text[start + 2:end].strip()
        if inner.startswith("date"):
            if not DATE_COMMAND.match(inner):
                raise ValueError(f"$({inner}): a date in a command must be a day (+%F or +%Y-%m-%d)")
            out.append(text[i:start] + SAMPLE_DATE)
        else:
            out.append(text[i:start] + "__SUBSTITUTED__")
        i = end + 1
    out.append(text[i:])
    return "".join(out)


def tokenize(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def expand(token: str, variables: dict) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), token)


def segments(tokens: list[str]) -> list[list[str]]:
    """Split a token list into simple commands at ; && || | & ( ) and drop redirections."""
    result, current, skip = [], [], False
    for index, token in enumerate(tokens):
        if skip:
            skip = False
        elif token and set(token) <= set(";&|()"):
            result.append(current)
            current = []
        elif token in REDIRECTS:
            skip = True
        elif token.isdigit() and index + 1 < len(tokens) and tokens[index + 1] in REDIRECTS:
            pass  # the fd of `2>&1`
        else:
            current.append(token)
    result.append(current)
    return [segment for segment in result if segment]


def invocations_in_tokens(source: str, tokens: list[str], variables: dict) -> list[Invocation]:
    found = []
    for segment in segments(tokens):
        env = {}
        while segment and (match := ASSIGNMENT.match(segment[0])):
            env[match.group(1)] = expand(match.group(2), variables)
            segment = segment[1:]
        if not segment:
            variables.update(env)  # `day=...` on its own: a shell variable for later commands
            continue
        segment = [expand(token, variables) for token in segment]
        found.extend(invocations_in_argv(source, segment, {**variables, **env}))
    return found


def invocations_in_argv(source: str, argv: list[str], env: dict) -> list[Invocation]:
    program, args = os.path.basename(argv[0]), argv[1:]
    if program == "vidpipe":
        return [Invocation(source, "vidpipe", tuple(args), env)]
    if program.startswith("python") and args:
        if args[0] == "-m" and args[1:2] == ["pipeline.cli"]:
            return [Invocation(source, "vidpipe", tuple(args[2:]), env)]
        script = Path(args[0])
        if script.suffix == ".py" and script.parent.name == "jobs":
            return [Invocation(source, f"jobs/{script.name}", tuple(args[1:]), env)]
        return []
    if program == "ray":
        path = ray_command_path(args)
        found = [Invocation(source, " ".join(["ray", *path]), tuple(args[len(path):]), env)]
        if path == ["job", "submit"] and "--" in args:
            entrypoint = args[args.index("--") + 1:]
            if entrypoint:
                found.extend(invocations_in_argv(source, entrypoint, {}))
        return found
    return []


def invocations_in_script(source: str, script: str, variables: dict | None = None) -> list[Invocation]:
    variables = {} if variables is None else variables
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        found.extend(invocations_in_tokens(source, tokenize(replace_command_substitutions(line)), variables))
    return found


def yaml_invocations(doc: Document) -> list[Invocation]:
    found = []
    if "cluster_name" in doc.body and "provider" in doc.body:  # a `ray up` config
        for path, node in walk(doc.body):
            if path and str(path[-1]).endswith("_commands") and isinstance(node, list):
                for command in node:
                    found.extend(invocations_in_script(doc.source, command))
        return found
    for path, node in walk(doc.body):
        if path and path[-1] == "entrypoint" and isinstance(node, str):
            found.extend(invocations_in_script(doc.source, node))
    for pod in pod_specs(doc.body):
        for container in containers(pod):
            argv = [*container.get("command", []), *container.get("args", [])]
            if not argv:
                continue
            if os.path.basename(argv[0]) in SHELLS:
                flags = [i for i, arg in enumerate(argv[1:], 1) if arg.startswith("-") and "c" in arg]
                if flags and flags[0] + 1 < len(argv):
                    found.extend(invocations_in_script(doc.source, argv[flags[0] + 1]))
                    continue
            found.extend(invocations_in_argv(doc.source, argv, {}))
    return found


def crontab_entries() -> list[tuple[list[str], str, dict]]:
    """(the five time fields, the command with cron's % escapes undone, the crontab's variables)."""
    entries, variables = [], {}
    for line in CRONTAB.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if (match := ASSIGNMENT.match(line)) and " " not in match.group(1):
            variables[match.group(1)] = match.group(2)
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"crontab line without 5 time fields and a command: {line}"
        command = fields[5]
        assert not re.search(r"(?<!\\)%", command), \
            f"unescaped % in a crontab command (cron turns it into a newline): {command}"
        entries.append((fields[:5], command.replace("\\%", "%"), dict(variables)))
    return entries


def crontab_invocations() -> list[Invocation]:
    found = []
    for _, command, variables in crontab_entries():
        for invocation in invocations_in_script("crontab", command, dict(variables)):
            invocation.env = {**variables, **invocation.env}
            found.append(invocation)
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    logical, current = [], []
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        logical.append(" ".join(part for part in [*current, stripped] if part))
        current = []
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1)[1:] or [""])[0]) for line in logical]


def dockerfile_invocations() -> list[Invocation]:
    found = []
    for instruction, arguments in dockerfile_instructions():
        if instruction not in {"RUN", "CMD", "ENTRYPOINT"}:
            continue
        if arguments.startswith("["):
            found.extend(invocations_in_argv("Dockerfile", yaml.safe_load(arguments), {}))
        else:
            found.extend(invocations_in_script("Dockerfile", arguments))
    return found


def all_invocations() -> list[Invocation]:
    found = []
    extractors = [(doc.source, lambda doc=doc: yaml_invocations(doc)) for doc in safe(documents)]
    extractors += [("crontab", crontab_invocations), ("Dockerfile", dockerfile_invocations)]
    for source, extract in extractors:
        try:
            found.extend(extract())
        except Exception as exc:  # reported by the test, not as a collection error
            found.append(Invocation(source, "<extraction>", error=f"{type(exc).__name__}: {exc}"))
    return found


def safe(load):
    try:
        return load()
    except Exception:
        return []  # test_every_yaml_file_parses reports it


# --- the parsers ------------------------------------------------------------------------------


def vidpipe_error(argv) -> str | None:
    """None if `vidpipe ARGV` parses; else the parser's message. Nothing runs."""
    try:
        build_parser().parse_args(list(argv))
    except UsageError as exc:
        return str(exc)
    except SystemExit as exc:  # --help exits 0
        return None if exc.code in (0, None) else f"the parser exited with {exc.code}"
    return None


def ray_cli():
    from ray.scripts.scripts import cli

    return cli


def ray_command_path(args: list[str]) -> list[str]:
    import click

    command, path = ray_cli(), []
    for arg in args:
        if not isinstance(command, click.Group) or arg not in command.commands:
            break
        command, path = command.commands[arg], [*path, arg]
    return path


def ray_error(path: list[str], argv) -> str | None:
    import click

    command = ray_cli()
    for name in path:
        command = command.commands[name]
    if isinstance(command, click.Group):
        return f"'ray {' '.join(path)}' needs a subcommand"
    try:
        command.make_context(" ".join(["ray", *path]), list(argv))
    except click.exceptions.Exit as exc:
        return None if exc.exit_code == 0 else f"exited with {exc.exit_code}"
    except click.ClickException as exc:
        return exc.format_message()
    return None


def command_error(invocation: Invocation) -> str | None:
    if invocation.error:
        return invocation.error
    if invocation.program == "vidpipe":
        return vidpipe_error(invocation.argv)
    if invocation.program.startswith("jobs/"):
        job = Path(invocation.program).stem
        if job not in JOB_SUBCOMMANDS:
            return f"{invocation.program} is not a known job entrypoint ({', '.join(JOB_SUBCOMMANDS)})"
        return vidpipe_error([JOB_SUBCOMMANDS[job], *invocation.argv])
    if invocation.program.startswith("ray"):
        return ray_error(invocation.program.split()[1:], invocation.argv)
    return f"no parser for {invocation.program}"


INVOCATIONS = all_invocations()


# --- every file parses; the commands they run parse -----------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_every_yaml_file_parses(path: Path):
    bodies = [body for body in yaml.safe_load_all(path.read_text()) if body is not None]
    assert bodies, f"{rel(path)} holds no document"
    assert all(isinstance(body, dict) for body in bodies)


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=lambda invocation: invocation.id)
def test_command_parses(invocation: Invocation):
    error = command_error(invocation)
    assert error is None, f"{invocation.source}: {invocation.program} {' '.join(invocation.argv)}\n  -> {error}"


def test_the_commands_found_are_the_ones_deployed():
    """Guards the extraction itself: every deployment path is seen running its entrypoint."""
    found = {(invocation.source, invocation.program) for invocation in INVOCATIONS}
    expected = {
        ("kuberay/raycronjob-nightly-scan.yaml", "jobs/nightly_scan.py"),
        ("kuberay/cronjob-nightly-scan.yaml#rayjob.yaml", "jobs/nightly_scan.py"),
        ("kuberay/rayjob-retrain.yaml", "jobs/retrain.py"),
        ("crontab", "ray job submit"),
        ("crontab", "jobs/nightly_scan.py"),
        ("ray-up.yaml", "ray start"),
        ("Dockerfile", "vidpipe"),
    }
    assert expected <= found, f"not found: {sorted(expected - found)}"


@pytest.mark.parametrize("job", sorted(JOB_SUBCOMMANDS))
def test_job_entrypoint_takes_the_arguments_of_its_subcommand(job, monkeypatch, capsys):
    """jobs/X.py --help is `vidpipe SUB --help`: the mapping the command checks rely on is true."""
    path = REPO / "jobs" / f"{job}.py"
    assert path.is_file(), f"jobs/{job}.py does not exist"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("RAY_ADDRESS", "untouched")  # the entrypoint's setdefault stays in this test
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(path), run_name="__main__")
    assert done.value.code in (0, None)
    assert f"usage: vidpipe {JOB_SUBCOMMANDS[job]} " in capsys.readouterr().out


@pytest.mark.parametrize("command, complaint", [
    ("python jobs/retrain.py data --out m.pt --wrokers 2", "--wrokers"),
    ("python /home/ray/vidpipe/jobs/batch_classify.py in out --model m.pt --windowseconds 2", "--windowseconds"),
    ("python jobs/batch_classify.py in out", "--model"),
    ("vidpipe train data --out m.pt --arch cnn4d", "cnn4d"),
    ("python jobs/frobnicate.py x", "not a known job"),
    ("RAY_AUTH_MODE=token ray job submit --submision-id x -- python jobs/retrain.py d --out m.pt", "--submision-id"),
    ("ray job submit --address http://h:8265 -- python jobs/retrain.py d --out m.pt --epochz 3", "--epochz"),
])
def test_the_check_catches_a_bad_command(command, complaint):
    errors = [command_error(invocation) for invocation in invocations_in_script("example", command)]
    assert any(error and complaint in error for error in errors), errors


def test_the_check_accepts_good_commands():
    script = ("day=$(date -u +%F) && cd /srv && X=1 /srv/.venv/bin/python jobs/batch_classify.py "
              "s3://b/in s3://b/out --model models:/vidpipe@champion --window-seconds 0 --json "
              ">> /tmp/log 2>&1; vidpipe --help > /dev/null")
    invocations = invocations_in_script("example", script)
    assert [invocation.program for invocation in invocations] == ["jobs/batch_classify.py", "vidpipe"]
    assert [command_error(invocation) for invocation in invocations] == [None, None]


# --- Kubernetes objects ---------------------------------------------------------------------


@pytest.mark.parametrize("doc", k8s_documents(), ids=lambda doc: f"{doc.source}:{doc.body.get('kind')}")
def test_kubernetes_object_is_well_formed(doc: Document):
    body = doc.body
    assert (body["apiVersion"], body.get("kind")) in KNOWN_KINDS, (body["apiVersion"], body.get("kind"))
    name = body["metadata"]["name"]
    assert len(name) <= 253 and all(DNS_LABEL.match(part) for part in name.split(".")), name
    if body["kind"] not in CLUSTER_SCOPED:
        assert body["metadata"].get("namespace") == NAMESPACE, f"{name}: namespace"


def rayjob_documents() -> list[Document]:
    return [*of_kind("RayJob"), *of_kind("RayCronJob")]


@pytest.mark.parametrize("doc", rayjob_documents(), ids=lambda doc: doc.source)
def test_rayjob_spec(doc: Document):
    spec = rayjob_spec(doc)
    assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), "no entrypoint"
    assert "rayClusterSpec" in spec or "clusterSelector" in spec, "a RayJob needs rayClusterSpec or clusterSelector"
    if spec.get("ttlSecondsAfterFinished", 0) > 0:
        assert spec.get("shutdownAfterJobFinishes") is True, \
            "ttlSecondsAfterFinished > 0 only takes effect with shutdownAfterJobFinishes: true"
    if "activeDeadlineSeconds" in spec:
        assert spec["activeDeadlineSeconds"] > 0


def ray_cluster_specs() -> list[tuple[str, dict]]:
    specs = [(doc.source, doc.body["spec"]) for doc in of_kind("RayCluster")]
    specs += [(doc.source, rayjob_spec(doc)["rayClusterSpec"]) for doc in rayjob_documents()
              if "rayClusterSpec" in rayjob_spec(doc)]
    return specs


@pytest.mark.parametrize("source, spec", ray_cluster_specs(), ids=[source for source, _ in ray_cluster_specs()])
def test_ray_cluster_spec(source: str, spec: dict):
    assert spec.get("rayVersion") == RAY_VERSION, f"rayVersion must be constraints.txt's ray=={RAY_VERSION}"
    assert spec.get("authOptions", {}).get("mode") == "token", "Ray 2.60 clusters run with token auth"
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    names = [group["groupName"] for group in spec.get("workerGroupSpecs", [])]
    assert len(names) == len(set(names)), names
    for group in spec.get("workerGroupSpecs", []):
        low, replicas, high = group.get("minReplicas", 0), group.get("replicas", 0), group.get("maxReplicas", 0)
        assert 0 <= low <= replicas <= high, f"{group['groupName']}: min {low} <= replicas {replicas} <= max {high}"
        for container in group["template"]["spec"]["containers"]:
            gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            if gpus:
                assert container["image"].endswith("-gpu"), f"{group['groupName']}: GPU pods need the -gpu image"


def test_raycronjob_nightly_scan():
    (doc,) = of_kind("RayCronJob")
    spec = doc.body["spec"]
    assert set(spec) <= RAYCRONJOB_FIELDS, f"fields RayCronJob does not have: {set(spec) - RAYCRONJOB_FIELDS}"
    assert len(spec["schedule"].split()) == 5, spec["schedule"]
    assert "nightly_scan.py" in rayjob_spec(doc)["entrypoint"]


def test_cronjob_creates_one_date_named_rayjob_per_night():
    (cronjob,) = of_kind("CronJob")
    spec = cronjob.body["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    # The submitter creates (never applies) the rendered RayJob...
    (submit,) = pod["containers"]
    command = [*submit.get("command", []), *submit.get("args", [])]
    assert os.path.basename(command[0]) == "kubectl" and command[1] == "create", command
    rendered = command[command.index("-f") + 1]
    # ...rendered by the init container from the ConfigMap template, with the date filled in...
    (render,) = pod["initContainers"]
    script = render["command"][-1]
    assert "__SCAN_DATE__" in script and os.path.basename(rendered) in script and "date -u +%F" in script
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounted = {mount["name"] for mount in render["volumeMounts"]}
    (template_map,) = [volumes[name]["configMap"]["name"] for name in mounted if "configMap" in volumes[name]]
    (rayjob,) = [doc for doc in of_kind("RayJob") if doc.source.endswith("#rayjob.yaml")]
    (config_map,) = [doc for doc in of_kind("ConfigMap") if doc.body["metadata"]["name"] == template_map]
    assert rayjob.source.startswith(config_map.source)
    # ...whose name is the date: a second creation the same night is refused as AlreadyExists.
    raw = yaml.safe_load(rayjob.raw)
    assert "__SCAN_DATE__" in raw["metadata"]["name"]
    name = rayjob.body["metadata"]["name"]
    assert DNS_LABEL.match(name) and len(name) <= 47, f"{name}: KubeRay derives cluster names from it"
    assert f"--date {SAMPLE_DATE}" in rayjob.body["spec"]["entrypoint"], "the scan date must be the name's date"
    # The submitter may create RayJobs in its namespace.
    account = pod["serviceAccountName"]
    bindings = [doc.body for doc in of_kind("RoleBinding")
                if any(subject["name"] == account for subject in doc.body["subjects"])]
    roles = {doc.body["metadata"]["name"]: doc.body for doc in of_kind("Role")}
    assert any("create" in rule["verbs"] and "rayjobs" in rule["resources"] and "ray.io" in rule["apiGroups"]
               for binding in bindings for rule in roles[binding["roleRef"]["name"]]["rules"]), \
        f"{account} may not create RayJobs"


def test_references_resolve():
    """ServiceAccounts and ConfigMaps the pods use are defined here; Secrets are documented."""
    defined = {kind: {doc.body["metadata"]["name"] for doc in of_kind(kind)} for kind in ("ServiceAccount", "ConfigMap")}
    readme = README.read_text()
    for doc in k8s_documents():
        for pod in pod_specs(doc.body):
            if "serviceAccountName" in pod:
                assert pod["serviceAccountName"] in defined["ServiceAccount"], (doc.source, pod["serviceAccountName"])
            for _, node in walk(pod):
                if not isinstance(node, dict):
                    continue
                for key in ("configMapRef", "configMapKeyRef", "configMap"):
                    if isinstance(node.get(key), dict):
                        assert node[key]["name"] in defined["ConfigMap"], (doc.source, node[key]["name"])
                for key in ("secretRef", "secretKeyRef"):
                    if isinstance(node.get(key), dict):
                        secret = node[key]["name"]
                        assert re.search(rf"create secret generic {re.escape(secret)}\b", readme), \
                            f"{doc.source}: Secret {secret} is not described in cluster/README.md"


# --- images -------------------------------------------------------------------------------------


def images() -> list[tuple[str, str]]:
    found = []
    for doc in k8s_documents():
        for pod in pod_specs(doc.body):
            found += [(doc.source, container["image"]) for container in containers(pod)]
    for doc in ray_up_configs():
        for path, node in walk(doc.body):
            if "docker" in path and path[-1] in {"image", "head_image", "worker_image"}:
                found.append((doc.source, node))
    for instruction, arguments in dockerfile_instructions():
        if instruction == "FROM":
            found.append(("Dockerfile", arguments.split()[0]))
        if instruction == "ARG" and arguments.split("=", 1)[0].endswith("_IMAGE"):
            found.append(("Dockerfile", arguments.split("=", 1)[1]))
    return found


def image_problem(image: str) -> str | None:
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    if not tag and "@sha256:" not in image:
        return "untagged"
    if tag == "latest":
        return "latest"
    if name == "rayproject/ray" and not tag.startswith(f"{RAY_VERSION}-"):
        return f"constraints.txt pins ray=={RAY_VERSION}"
    if name.endswith("/vidpipe") and not tag.startswith(f"{PROJECT_VERSION}-"):
        return f"pyproject.toml says version {PROJECT_VERSION}"
    return None


def test_images_are_pinned():
    found = [(source, image) for source, image in images() if not image.startswith("${")]  # FROM ${ARG}
    assert {source for source, _ in found} >= {"Dockerfile", "ray-up.yaml", "kuberay/raycluster.yaml"}
    problems = [f"{source}: {image}: {problem}" for source, image in found
                if (problem := image_problem(image))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("image, problem", [
    ("busybox", "untagged"),
    ("registry.example.com:5000/vidpipe", "untagged"),
    ("rayproject/ray:latest", "latest"),
    ("rayproject/ray:2.59.0-py311", "constraints.txt"),
    ("registry.example.com/vidpipe:9.9.9-cpu", "pyproject.toml"),
    ("busybox@sha256:" + "0" * 64, None),
])
def test_the_check_catches_an_unpinned_image(image, problem):
    found = image_problem(image)
    assert (found is None) if problem is None else (found and problem in found), found


def test_dockerfile_builds_from_the_pinned_ray_with_the_constraints():
    instructions = dockerfile_instructions()
    args = dict(arguments.split("=", 1) for instruction, arguments in instructions
                if instruction == "ARG" and "=" in arguments)
    (base,) = [arguments for instruction, arguments in instructions if instruction == "FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.startswith(f"rayproject/ray:{RAY_VERSION}-py311"), base
    # Every Ray image the file mentions (the -gpu variant in its comments too) is the pinned Ray.
    for tag in re.findall(r"rayproject/ray:(\S+)", DOCKERFILE.read_text()):
        assert tag.startswith(f"{RAY_VERSION}-"), tag
    run = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "-c constraints.txt ." in run, "the package must be installed with constraints.txt's pins"
    assert "ffmpeg" in run


# --- secrets ----------------------------------------------------------------------------------


def test_no_literal_secrets():
    assert not of_kind("Secret"), "Secrets are created with kubectl, never committed"
    texts = {path: path.read_text() for path in [*yaml_files(), CRONTAB, DOCKERFILE]}
    for path, text in texts.items():
        assert not URL_WITH_PASSWORD.search(text), f"{path.name}: a URL with user:password"
        assert not AWS_KEY_ID.search(text), f"{path.name}: an AWS access key id"
        for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S*)", text):
            assert not SENSITIVE_NAME.search(name), f"{path.name}: {name}={value}"
    for doc in k8s_documents():
        for _, node in walk(doc.body):
            if isinstance(node, dict) and isinstance(node.get("name"), str) and SENSITIVE_NAME.search(node["name"]):
                assert "value" not in node, f"{doc.source}: {node['name']} must come from a Secret (valueFrom)"
    for instruction, arguments in dockerfile_instructions():
        if instruction in {"ENV", "ARG"}:
            assert not SENSITIVE_NAME.search(arguments.split("=")[0].split()[0]), arguments


# --- ray up -------------------------------------------------------------------------------------


def test_ray_up_config_is_valid_for_the_pinned_ray():
    from ray.autoscaler._private.util import prepare_config, validate_config

    (doc,) = ray_up_configs()
    config = doc.body
    # What `ray up` does with it before touching AWS: defaults, schema, node types.
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    workers = {name: spec for name, spec in types.items() if name != config["head_node_type"]}
    assert any(spec["resources"].get("GPU", 0) >= 1 for spec in workers.values()), "no GPU worker type"
    assert any(not spec["resources"].get("GPU") for spec in workers.values()), "no CPU worker type"
    for name, spec in workers.items():
        assert 0 <= spec["min_workers"] <= spec["max_workers"], name
        if spec["resources"].get("GPU"):
            assert spec["docker"]["worker_image"].endswith("-gpu"), name
    assert sum(spec["max_workers"] for spec in workers.values()) <= config["max_workers"]
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]


# --- the crontab ------------------------------------------------------------------------------


def test_crontab_submits_one_job_per_day():
    entries = crontab_entries()
    assert entries, "no job line in cluster/crontab"
    for fields, _, _ in entries:
        for value in fields:
            assert re.fullmatch(r"[\d*,/-]+", value), f"time field {value!r}"
    submits = [invocation for invocation in crontab_invocations() if invocation.program == "ray job submit"]
    scans = [invocation for invocation in crontab_invocations() if invocation.program == "jobs/nightly_scan.py"]
    assert len(submits) == len(scans) == len(entries)
    for submit, scan in zip(submits, scans):
        assert submit.env.get("RAY_AUTH_MODE") == "token", "Ray 2.60 clients need RAY_AUTH_MODE=token"
        argv = list(submit.argv)
        submission_id = argv[argv.index("--submission-id") + 1]
        # Deterministic per day: the id is made of fixed text and the day only, the day the scan gets.
        assert SAMPLE_DATE in submission_id and not re.search(r"\$", submission_id), submission_id
        scan_argv = list(scan.argv)
        assert scan_argv[scan_argv.index("--date") + 1] == SAMPLE_DATE


# --- the GPU decoding path (NVDEC) ----------------------------------------------------------


def _capabilities(value: str) -> set[str]:
    return {part.strip() for part in value.split(",")}


def test_gpu_workers_can_decode_on_nvdec():
    """The GPU path (pipeline/decode_nvdec.py) needs the driver's video libraries in the
    container (the `video` driver capability) and PyAV's NVDEC-enabled FFmpeg: the image asks
    for the capability and checks PyAV at build time, ray up's GPU type passes it on docker run,
    and no GPU pod overrides it without `video`."""
    instructions = dockerfile_instructions()
    env = dict(arguments.split("=", 1) for instruction, arguments in instructions
               if instruction == "ENV" and "=" in arguments)
    assert "video" in _capabilities(env.get("NVIDIA_DRIVER_CAPABILITIES", "")), env
    assert {"compute", "utility"} <= _capabilities(env["NVIDIA_DRIVER_CAPABILITIES"])
    run = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "hwdevices_available()" in run and "'cuda'" in run, "the build checks PyAV's CUDA support"
    pinned = re.search(r"^av==(\d+)\.(\d+)", (REPO / "constraints.txt").read_text(), re.M)
    assert pinned and (int(pinned[1]), int(pinned[2])) >= (18, 1), "decode_nvdec needs PyAV >= 18.1"

    (doc,) = ray_up_configs()
    for name, spec in doc.body["available_node_types"].items():
        if spec["resources"].get("GPU"):
            options = " ".join(spec["docker"].get("worker_run_options", []))
            passed = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", options)
            assert passed and "video" in _capabilities(passed[1]), name

    gpu_containers = [(doc.source, node) for doc in k8s_documents() for _, node in walk(doc.body)
                      if isinstance(node, dict) and "image" in node
                      and "nvidia.com/gpu" in node.get("resources", {}).get("limits", {})]
    assert gpu_containers, "no GPU pods found"
    for source, container in gpu_containers:
        assert container["image"].endswith("-gpu"), source  # the image that asks for `video`
        for variable in container.get("env") or []:
            if variable.get("name") == "NVIDIA_DRIVER_CAPABILITIES":
                assert "video" in _capabilities(variable.get("value", "")), source
