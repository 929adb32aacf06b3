#!/bin/sh
# Docker health check of the Artwork QC images (installed as /usr/local/bin/qc-healthcheck).
#
# A worker started with QC_METRICS_PORT serves Prometheus metrics on that port from its main
# process; it is healthy while that endpoint answers. This is cheap and local, unlike
# `celery inspect ping`, which broadcasts over Redis to every worker and waits for replies.
# It says the worker process is up and serving, not that a task will succeed: the task
# failure counters in the metrics say that.
#
# Containers without QC_METRICS_PORT (beat, migrate, one-off commands) have nothing to ask, so
# they count as healthy for as long as their process runs.
set -eu

port="${QC_METRICS_PORT:-}"
if [ -z "$port" ]; then
    exit 0
fi

exec python -c '
import sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/metrics"
try:
    with urllib.request.urlopen(url, timeout=5) as response:
        response.read(1)
except Exception as exc:
    sys.exit(f"unhealthy: {url}: {exc}")
' "$port"
