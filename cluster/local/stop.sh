#!/usr/bin/env bash
# Stops every Ray node started on this machine by cluster/local/start.sh.
here="$(cd "$(dirname "$0")/../.." && pwd)"
"${RAY:-$here/.venv/bin/ray}" stop --force
