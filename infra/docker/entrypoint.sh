#!/bin/sh
# Entry point of the Artwork QC images (Dockerfile.cuda, Dockerfile.cpu).
#
# Runs the container's command with exec, so it is the process that receives SIGTERM: a
# Celery worker then does a warm shutdown (finishes its current task) before it exits.
# Compose's `init: true` puts a small init in front of it to reap stray children.
#
# A command that starts with a qc sub-command or an option is run by qc:
#   docker run IMAGE worker --queues screen   ==  docker run IMAGE qc worker --queues screen
#
# There is no wait-for-database loop here on purpose: under compose, depends_on waits for the
# healthy database and the finished migration; elsewhere Celery retries the broker connection
# itself and the tasks retry database errors with back-off (QC_RETRY_MAX, QC_RETRY_BACKOFF_MAX_S).
set -eu

if [ "$#" -eq 0 ]; then
    set -- qc --help
fi

case "$1" in
    -*) set -- qc "$@" ;;
    *)
        if ! command -v "$1" >/dev/null 2>&1; then
            set -- qc "$@"
        fi
        ;;
esac

exec "$@"
