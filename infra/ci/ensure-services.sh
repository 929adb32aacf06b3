#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer, starting local
# servers only when nothing answers there. Used by .ci/run; safe to run by hand and to run
# twice. Integration tests talk to these real servers (the design's "Real parts" table).
#
# Exit status: 0 when both answer, 1 when one cannot be reached or started (with a message
# that says what is missing).
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
WAIT_SECONDS=30

log() { echo "ensure-services: $*"; }
fail() { echo "ensure-services: ERROR: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

pg_answers() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_answers() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

# wait_for NAME CHECK-FUNCTION: poll until CHECK succeeds or WAIT_SECONDS pass.
wait_for() {
    local name=$1 check=$2 i
    for ((i = 0; i < WAIT_SECONDS * 2; i++)); do
        if "$check"; then
            return 0
        fi
        sleep 0.5
    done
    fail "$name did not answer within ${WAIT_SECONDS}s after starting"
}

ensure_postgres() {
    have pg_isready || fail "pg_isready not found: install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)"
    if pg_answers; then
        log "PostgreSQL already answers on $PG_HOST:$PG_PORT"
        return 0
    fi
    have pg_ctlcluster || fail "PostgreSQL does not answer on $PG_HOST:$PG_PORT and pg_ctlcluster was not found: install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) or start a server on $PG_HOST:$PG_PORT yourself"
    local version
    # Highest installed major version when there are several.
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$version" ] || fail "PostgreSQL does not answer on $PG_HOST:$PG_PORT and no cluster exists under /etc/postgresql: create one (pg_createcluster <version> main) or start a server yourself"
    log "starting PostgreSQL $version/main"
    if ! pg_ctlcluster --skip-systemctl-redirect "$version" main start; then
        # Already running but not answering on $PG_HOST:$PG_PORT, or a real failure.
        pg_lsclusters >&2 2>/dev/null || true
        fail "could not start PostgreSQL cluster $version/main (see the messages above; it must listen on $PG_HOST:$PG_PORT)"
    fi
    wait_for "PostgreSQL on $PG_HOST:$PG_PORT" pg_answers
    log "PostgreSQL answers on $PG_HOST:$PG_PORT"
}

ensure_redis() {
    have redis-cli || fail "redis-cli not found: install Redis (Debian/Ubuntu: apt-get install redis-server redis-tools)"
    if redis_answers; then
        log "Redis already answers on $REDIS_HOST:$REDIS_PORT"
        return 0
    fi
    have redis-server || fail "Redis does not answer on $REDIS_HOST:$REDIS_PORT and redis-server was not found: install Redis (Debian/Ubuntu: apt-get install redis-server) or start a server on $REDIS_HOST:$REDIS_PORT yourself"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null \
        || fail "cannot create /var/lib/redis and /var/log/redis (run as a user that may, or start Redis yourself)"
    log "starting redis-server on $REDIS_HOST:$REDIS_PORT (no persistence)"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || fail "redis-server failed to start (see /var/log/redis/ci.log)"
    wait_for "Redis on $REDIS_HOST:$REDIS_PORT" redis_answers
    log "Redis answers on $REDIS_HOST:$REDIS_PORT"
}

ensure_postgres
ensure_redis
