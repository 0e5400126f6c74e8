#!/usr/bin/env bash
# Start or stop the fleet as background processes: pids in .run/<service>.pid, logs in .run/<service>.log.
#   fleet.sh up | down | status
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
RUN="$ROOT/.run"
VENV="$ROOT/.venv/bin"
mkdir -p "$RUN"

# Prometheus multiprocess mode: each service writes its metric files to its own directory,
# emptied at every start (api /metrics on its bind; workers on 9101/9102/9103, see README).
M="env PROMETHEUS_MULTIPROC_DIR=$RUN/metrics"
FLOWER_AUTH="$RUN/flower-auth"

# name|command
services() {
    cat <<CMDS
api|$M/api $VENV/gunicorn -c services/api/gunicorn.conf.py -b ${SANDBOX_API_BIND:-127.0.0.1:8000} services.api.wsgi:app
provisioner|$M/provisioner $VENV/celery -A services.provisioner.worker worker -Q provision -n provisioner@%h -c 2 --loglevel INFO
executor|$M/executor $VENV/celery -A services.executor.worker worker -Q execute,aci -n executor@%h -c ${SANDBOX_EXECUTOR_CONCURRENCY:-4} --loglevel INFO
finalizer|$M/finalizer $VENV/celery -A services.finalizer.worker worker -Q finalize,maintenance,webhooks -n finalizer@%h -c 2 --loglevel INFO
beat|$M/beat $VENV/celery -A services.finalizer.worker beat --schedule $RUN/celerybeat-schedule --loglevel INFO
flower|env FLOWER_BASIC_AUTH=\$(cat $FLOWER_AUTH) $VENV/celery -A services.finalizer.worker flower --address=127.0.0.1 --port=${SANDBOX_FLOWER_PORT:-5555} --persistent=True --db=$RUN/flower.db --state_save_interval=60000 --max_tasks=10000 --purge_offline_workers=3600
CMDS
}

# Flower sits behind basic auth; its credentials are generated once and kept (mode 600).
flower_auth() {
    if [[ ! -s "$FLOWER_AUTH" ]]; then
        (umask 077; printf 'operator:%s' "$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > "$FLOWER_AUTH")
        echo "generated Flower credentials in $FLOWER_AUTH"
    fi
}

alive() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

up() {
    flower_auth
    while IFS='|' read -r name cmd; do
        if alive "$name"; then echo "$name already running (pid $(cat "$RUN/$name.pid"))"; continue; fi
        rm -rf "$RUN/metrics/$name" && mkdir -p "$RUN/metrics/$name"
        # setsid: the service gets its own process group, so `down` stops its children too.
        setsid bash -c "exec $cmd" >>"$RUN/$name.log" 2>&1 < /dev/null &
        echo $! > "$RUN/$name.pid"
        echo "started $name (pid $!)"
    done < <(services)
    for _ in $(seq 1 60); do
        if curl -fsS "http://${SANDBOX_API_BIND:-127.0.0.1:8000}/readyz" >/dev/null 2>&1; then
            echo "Flower: http://127.0.0.1:${SANDBOX_FLOWER_PORT:-5555} (user operator, password in $FLOWER_AUTH)"
            echo "metrics: api http://${SANDBOX_API_BIND:-127.0.0.1:8000}/metrics, workers 127.0.0.1:9101-9103/metrics"
            return 0
        fi
        sleep 0.5
    done
    echo "the api did not become ready; see $RUN/api.log" >&2
    return 1
}

down() {
    while IFS='|' read -r name _; do
        if alive "$name"; then
            pid="$(cat "$RUN/$name.pid")"
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -KILL -- "-$pid" 2>/dev/null || true
            echo "stopped $name"
        fi
        rm -f "$RUN/$name.pid"
    done < <(services)
}

status() {
    while IFS='|' read -r name _; do
        if alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done < <(services)
}

case "${1:-}" in
    up) up ;; down) down ;; status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
