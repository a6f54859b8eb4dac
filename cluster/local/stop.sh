#!/usr/bin/env bash
# Stops the loopback cluster that start.sh started with the same environment, and only it:
# `ray stop` would also end any other Ray on this machine (a notebook's, a test session's).
GCS_PORT="${VIDPIPE_GCS_PORT:-6390}"
TEMP_DIR="${VIDPIPE_RAY_TEMP:-/tmp/vidpipe-ray-$GCS_PORT}"

descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
cluster_pids() {
    local pid
    # Every process of the cluster names its temp dir or its GCS port; agents and workers are
    # their children (they rename themselves, e.g. ray::DashboardAgent).
    for pid in $(pgrep -f -- "$TEMP_DIR/") $(pgrep -f -- "--address=[^ ]*:$GCS_PORT( |$)"); do
        echo "$pid"; descendants "$pid"
    done | sort -u
}

pids=$(cluster_pids)
if [ -z "$pids" ]; then
    echo "no loopback Ray cluster on port $GCS_PORT to stop"
    exit 0
fi
stopped="stopped the loopback Ray cluster on port $GCS_PORT ($(echo $pids | wc -w) processes)"
kill -TERM $pids 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
    # Alive means present and not a zombie (a zombie has exited; its parent reaps it).
    alive=$(for pid in $pids; do state=$(ps -o stat= -p "$pid" 2>/dev/null); \
            [ -n "$state" ] && [ "${state#Z}" = "$state" ] && echo "$pid"; done)
    if [ -z "$alive" ]; then
        echo "$stopped"
        exit 0
    fi
    sleep 1
done
kill -KILL $alive 2>/dev/null
echo "$stopped; $(echo $alive | wc -w) of them needed SIGKILL"
exit 0
