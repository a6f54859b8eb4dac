#!/usr/bin/env bash
# A real two-node Ray cluster on loopback: a head and one worker node, each with its own CPUs.
# Ports, CPUs and the temp dir come from the environment; token auth stays on (Ray 2.60's
# default). The cluster's own temp dir lets stop.sh end exactly this cluster and nothing else.
# Each node gets a temp dir of its own inside it: nodes on one machine would otherwise share one
# runtime_resources folder, and a node that unpacks a job's working_dir first deletes the copy
# another node's processes are running in (their cwd vanishes mid-import).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
RAY="${RAY:-$here/.venv/bin/ray}"
# Jobs run `python ...` as the first python on the raylet's PATH: make it this checkout's
# environment (the one with vidpipe's dependencies), as `ray job submit -- python ...` expects.
export PATH="$(dirname "$RAY"):$PATH"
GCS_PORT="${VIDPIPE_GCS_PORT:-6390}"
DASHBOARD_PORT="${VIDPIPE_DASHBOARD_PORT:-8275}"
TEMP_DIR="${VIDPIPE_RAY_TEMP:-/tmp/vidpipe-ray-$GCS_PORT}"

# Every node's agents get free ports: the fixed defaults (52365 and friends) are often held by
# another Ray on the same machine (an in-process test Ray, a second node), and an agent that cannot
# bind leaves the head without a job agent ("No available agent to submit job").
free_port() { "$(dirname "$RAY")/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
agent_ports() {
    echo --dashboard-agent-listen-port "$(free_port)" --dashboard-agent-grpc-port "$(free_port)" \
        --runtime-env-agent-port "$(free_port)" --metrics-export-port "$(free_port)"
}

# Token auth (on by default in Ray 2.60): with RAY_AUTH_MODE=token already set, as the README's
# commands and the tests have it, `ray start --head` refuses to start on a machine that has no
# token yet instead of making one; make it first (Ray writes it to ~/.ray/auth_token; the token
# itself stays out of the output).
if [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
    RAY_AUTH_MODE=token "$RAY" get-auth-token --generate >/dev/null 2>&1
    chmod 600 "$HOME/.ray/auth_token"
fi
# Ray's own start-up banner (31 lines, and it advises `ray stop`, which would end every Ray on
# this machine) goes to a log that is shown only if a node fails to start.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start() { "$RAY" start "$@" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
start --head --node-ip-address 127.0.0.1 --port "$GCS_PORT" \
    --num-cpus "${VIDPIPE_HEAD_CPUS:-1}" --temp-dir "$TEMP_DIR" \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --ray-client-server-port "$(free_port)" $(agent_ports) --disable-usage-stats
RAY_AUTH_MODE=token start --address "127.0.0.1:$GCS_PORT" --node-ip-address 127.0.0.1 \
    --num-cpus "${VIDPIPE_WORKER_CPUS:-1}" --temp-dir "$TEMP_DIR/node-2" $(agent_ports) \
    --disable-usage-stats
echo "started a two-node Ray cluster on loopback (RAY_ADDRESS=127.0.0.1:$GCS_PORT, jobs at" \
    "http://127.0.0.1:$DASHBOARD_PORT, logs in $TEMP_DIR); stop it with cluster/local/stop.sh"
