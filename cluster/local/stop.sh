#!/usr/bin/env bash
# Stops the loopback cluster that start.sh started with the same environment, and only it:
# `ray stop` would also end any other Ray on this machine (a notebook's, a test session's).
GCS_PORT="${VIDPIPE_GCS_PORT:-6390}"
TEMP_DIR="${VIDPIPE_RAY_TEMP:-/tmp/vidpipe-ray-$GCS_PORT}"
GRACE_S="${VIDPIPE_STOP_GRACE_S:-10}"   # per stage, before SIGKILL

descendants() { local child; for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done; }
cluster_pids() {
    local pid
    # Every process of the cluster names its temp dir or its GCS port; agents and workers are
    # their children (they rename themselves, e.g. ray::DashboardAgent).
    for pid in $(pgrep -f -- "$TEMP_DIR/") $(pgrep -f -- "--address=[^ ]*:$GCS_PORT( |$)"); do
        echo "$pid"; descendants "$pid"
    done | sort -u
}
# Alive means present and not a zombie (a zombie has exited; its parent reaps it).
alive() { local pid state; for pid in "$@"; do state=$(ps -o stat= -p "$pid" 2>/dev/null); \
          [ -n "$state" ] && [ "${state#Z}" = "$state" ] && echo "$pid"; done; }
killed=0
# SIGTERM, then up to GRACE_S for them to exit, then SIGKILL for those left.
stop_stage() {
    [ $# -eq 0 ] && return
    kill -TERM "$@" 2>/dev/null
    local left deadline=$((SECONDS + GRACE_S))
    while left=$(alive "$@"); [ -n "$left" ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if [ -n "$left" ]; then
        kill -KILL $left 2>/dev/null
        killed=$((killed + $(echo $left | wc -w)))
    fi
}

pids=$(cluster_pids)
if [ -z "$pids" ]; then
    echo "no loopback Ray cluster on port $GCS_PORT to stop"
    exit 0
fi
# In `ray stop`'s order: the raylets, then the rest, the GCS last. Signalled all at once, the
# raylets and the GCS stayed up through the whole grace and two processes were killed (11.7 s
# a stop); in this order every process exits on SIGTERM, about 2 s in all.
named() { ps -o pid=,comm= -p "$(echo $pids | tr ' ' ,)" | awk -v name="$1" '$2 == name {print $1}'; }
raylets=$(named raylet)
gcs=$(named gcs_server)
others=$(echo $pids $raylets $gcs | tr ' ' '\n' | sort | uniq -u)
stop_stage $raylets
stop_stage $(alive $others)
stop_stage $gcs
stopped="stopped the loopback Ray cluster on port $GCS_PORT ($(echo $pids | wc -w) processes)"
if [ "$killed" -gt 0 ]; then
    echo "$stopped; $killed of them needed SIGKILL"
else
    echo "$stopped"
fi
exit 0
