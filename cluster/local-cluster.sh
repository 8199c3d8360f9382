#!/usr/bin/env bash
# A multi-node Ray cluster on one machine, laid out like a real one, for debugging: a head that runs no work
# (0 CPUs: job drivers and Ray's own services only), sandbox nodes that advertise the `sandbox` resource execution
# tasks request, a trainer node that advertises `trainer` (for train.resource=trainer: the actor and critic
# trainers) and an inference node that advertises `inference` (for rollout.resource=inference: generators and critic
# scorers). Without those two settings the roles may land on either node (plain CPUs on both).
#
#   cluster/local-cluster.sh start            # head + 1 sandbox node + 1 trainer node + 1 inference node
#   SANDBOX_NODES=2 cluster/local-cluster.sh start
#   cluster/local-cluster.sh add-sandbox      # grow the execution pool by one node; nothing else changes
#   cluster/local-cluster.sh remove-sandbox   # shrink it (stops the newest sandbox node)
#   cluster/local-cluster.sh status
#   eval "$(cluster/local-cluster.sh env)"    # RAY_ADDRESS etc. for drivers and `ray job submit`
#   cluster/local-cluster.sh stop
#
# Settings (environment): CLUSTER_DIR (state, logs; default /tmp/coderl-cluster), HEAD_PORT (6379),
# DASHBOARD_PORT (8265), SANDBOX_NODES (1), SANDBOX_CPUS (1 per node), TRAINER_CPUS (1), TRAINER_GPUS (0),
# INFERENCE_CPUS (1; 0 = no inference node), INFERENCE_GPUS (0),
# SANDBOX_RESOURCE (sandbox; must match sandbox.resource in the config), OBJECT_STORE_MB (512 per node), RAY (the
# `ray` executable; default: the one next to this checkout's .venv, else on PATH).
#
# `stop` ends only this cluster's processes: every node is started in its own session (setsid) and stop signals
# those sessions and their descendants. `ray stop` would kill every Ray process of every user session on the
# machine, including other clusters and in-process test clusters.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/coderl-cluster}"
HEAD_PORT="${HEAD_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
SANDBOX_NODES="${SANDBOX_NODES:-1}"
SANDBOX_CPUS="${SANDBOX_CPUS:-1}"
TRAINER_CPUS="${TRAINER_CPUS:-1}"
TRAINER_GPUS="${TRAINER_GPUS:-0}"
INFERENCE_CPUS="${INFERENCE_CPUS:-1}"
INFERENCE_GPUS="${INFERENCE_GPUS:-0}"
SANDBOX_RESOURCE="${SANDBOX_RESOURCE:-sandbox}"
OBJECT_STORE_MB="${OBJECT_STORE_MB:-512}"
if [[ -z "${RAY:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/ray" ]]; then RAY="$ROOT/.venv/bin/ray"; else RAY="$(command -v ray || true)"; fi
fi
PYTHON="$(dirname "${RAY:-/x}")/python"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
# Job entrypoints (`-- python jobs/...`) run with the nodes' PATH: make it find the Python that has Ray, as the
# image of a real node does, even when this script is run without activating the virtual environment.
[[ -n "$RAY" ]] && export PATH="$(dirname "$RAY"):$PATH"
# Ray replaces a loopback address by the machine's routable one (nodes must reach each other), so the cluster
# listens on the network like any other: token authentication (setup_auth) is what keeps other users out.
IP=127.0.0.1
NODES="$CLUSTER_DIR/nodes"
# Ray's Unix sockets live under each node's temp dir and their paths must stay below 108 bytes: keep it shallow.
temp_dir() { if [[ "$1" == head ]]; then echo "$CLUSTER_DIR/ray"; else echo "$CLUSTER_DIR/$1"; fi; }

die() { echo "local-cluster: $*" >&2; exit 1; }

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

setup_auth() {
    # Token authentication, on explicitly so that every node, driver and `ray job submit` agrees (clients given an
    # explicit address send the token only when RAY_AUTH_MODE=token). The token is this cluster's own, in
    # CLUSTER_DIR: one in ~/.ray/auth_token would outlive the cluster and make any later plain `ray start --head`
    # require tokens that `ray job submit` does not send (docs/cluster.md). A token the caller set is kept.
    if "$RAY" get-auth-token --help >/dev/null 2>&1; then
        export RAY_AUTH_MODE=token
        if [[ -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
            export RAY_AUTH_TOKEN_PATH="$CLUSTER_DIR/auth_token"
            if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
                (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$RAY_AUTH_TOKEN_PATH") \
                    || die "could not write a Ray auth token to $RAY_AUTH_TOKEN_PATH"
            fi
        fi
    fi
}

# start_node NAME RAY_START_ARGS...: one node, in a session of its own whose id is recorded in nodes/NAME, with
# its own temp dir (logs, sockets): nodes sharing one would each forward every worker's output to the drivers.
start_node() {
    local name="$1"; shift
    command -v setsid >/dev/null || die "setsid (util-linux) is needed to keep nodes apart"
    mkdir -p "$NODES"
    local attempt
    for attempt in 1 2 3; do
        AGENT_PORT="$(free_port)"
        # `exec` keeps the session leader's pid, which is the session id that every process of the node inherits.
        if setsid -w bash -c 'echo $$ > "$0"; exec "$@"' "$NODES/$name" \
                "$RAY" start "$@" --temp-dir="$(temp_dir "$name")" --disable-usage-stats \
                --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) \
                --dashboard-agent-listen-port="$AGENT_PORT" >"$CLUSTER_DIR/$name.log" 2>&1; then
            echo "started $name"
            return 0
        fi
        # `ray start` waits a fixed 30 s for the new raylet to register with the GCS and then gives up ("The current
        # node timed out during startup"), which happened on 2026-12-04 to a sandbox node on a 2-core machine with a
        # load average of 30-70. Anything else is not retried.
        grep -q "timed out during startup" "$CLUSTER_DIR/$name.log" || break
        stop_sessions "$(cat "$NODES/$name")"
        echo "node $name: Ray gave up waiting for it to register (a loaded machine?); retrying" >&2
    done
    cat "$CLUSTER_DIR/$name.log" >&2
    die "node $name failed to start (log: $CLUSTER_DIR/$name.log)"
}

# `ray start` returns before the node's dashboard agent is up, and the head hands every job submission to its own
# node's agent (waiting 10 s at most): `start` returns once the head's agent listens, so that a `ray job submit`
# right after it finds one. The agent registers with the GCS as soon as its HTTP server listens.
wait_for_agent() {
    local port="$1"
    "$PYTHON" - "$port" <<'PY' || die "the head's dashboard agent did not come up in 180 s (log: $CLUSTER_DIR/ray/session_latest/logs/dashboard_agent.log)"
import socket, sys, time
deadline = time.time() + 180
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(1)
PY
}

start_sandbox() {
    local name="$1"
    start_node "$name" --address="$IP:$HEAD_PORT" --num-cpus="$SANDBOX_CPUS" --num-gpus=0 \
        --resources="{\"$SANDBOX_RESOURCE\": $SANDBOX_CPUS}"
}

# Every pid of the sessions given, plus their descendants (job drivers and sandboxes start sessions of their own).
session_pids() {
    ps -eo pid=,ppid=,sid= | awk -v sids=" $* " '
        { pid[NR] = $1; ppid[NR] = $2; if (index(sids, " " $3 " ")) keep[$1] = 1 }
        END {
            do { grew = 0
                 for (i = 1; i <= NR; i++) if (!(pid[i] in keep) && (ppid[i] in keep)) { keep[pid[i]] = 1; grew = 1 }
            } while (grew)
            for (p in keep) print p
        }'
}

alive() { for p in "$@"; do if kill -0 "$p" 2>/dev/null; then echo "$p"; fi; done; }

stop_sessions() {
    local pids
    pids="$(session_pids "$@")"
    [[ -z "$pids" ]] && return 0
    # SIGTERM lets raylets and the GCS shut down cleanly; whatever ignores it for 15 s is killed.
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 30); do
        pids="$(alive $pids)"
        [[ -z "$pids" ]] && return 0
        sleep 0.5
    done
    kill -KILL $pids 2>/dev/null || true
}

sandbox_nodes() { ls "$NODES" 2>/dev/null | grep '^sandbox-' | sort -t- -k2 -n || true; }

write_env() {
    # The footer setting: Ray Data starts 32 actors to read the footers of each Parquet read by default, which on
    # a laptop costs more than a replay-buffer round's read itself (see cluster/runtime_env.yaml).
    cat >"$CLUSTER_DIR/env" <<EOF
export RAY_ADDRESS=$IP:$HEAD_PORT
export RAY_API_SERVER_ADDRESS=http://$IP:$DASHBOARD_PORT
export RAY_DATA_PARQUET_FOOTER_NUM_ACTORS=2
${RAY_AUTH_MODE:+export RAY_AUTH_MODE=$RAY_AUTH_MODE}
${RAY_AUTH_TOKEN_PATH:+export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH}
EOF
}

load_env() {
    [[ -f "$CLUSTER_DIR/env" ]] || die "no cluster in $CLUSTER_DIR (run: $0 start)"
    # shellcheck disable=SC1091
    source "$CLUSTER_DIR/env"
    HEAD_PORT="${RAY_ADDRESS##*:}"
}

cmd_start() {
    [[ -n "$RAY" && -x "$RAY" ]] || die "no ray executable (set RAY=/path/to/ray or run make install)"
    if [[ -f "$NODES/head" ]] && [[ -n "$(session_pids "$(cat "$NODES/head")")" ]]; then
        die "a cluster is already running in $CLUSTER_DIR (stop it first, or set CLUSTER_DIR)"
    fi
    rm -rf "$NODES"
    mkdir -p "$CLUSTER_DIR"
    setup_auth
    start_node head --head --port="$HEAD_PORT" --num-cpus=0 --num-gpus=0 \
        --include-dashboard=true --dashboard-host="$IP" --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$(free_port)"
    wait_for_agent "$AGENT_PORT"
    write_env
    for i in $(seq 1 "$SANDBOX_NODES"); do start_sandbox "sandbox-$i"; done
    # One unit of each placement resource: roles request a 1/100 share (coderl_ray/registry.py, PLACEMENT_SHARE).
    if [[ "$TRAINER_CPUS" -gt 0 || "$TRAINER_GPUS" -gt 0 ]]; then
        start_node trainer --address="$IP:$HEAD_PORT" --num-cpus="$TRAINER_CPUS" --num-gpus="$TRAINER_GPUS" \
            --resources='{"trainer": 1}'
    fi
    if [[ "$INFERENCE_CPUS" -gt 0 || "$INFERENCE_GPUS" -gt 0 ]]; then
        start_node inference --address="$IP:$HEAD_PORT" --num-cpus="$INFERENCE_CPUS" --num-gpus="$INFERENCE_GPUS" \
            --resources='{"inference": 1}'
    fi
    echo "cluster up: GCS $IP:$HEAD_PORT, dashboard http://$IP:$DASHBOARD_PORT; state and logs in $CLUSTER_DIR"
    echo "  eval \"\$($0 env)\"   then   ray job submit --working-dir . -- python jobs/pipeline.py ..."
}

cmd_add_sandbox() {
    load_env
    local last
    last="$(sandbox_nodes | tail -1)"
    start_sandbox "sandbox-$(( ${last#sandbox-} + 1 ))"
}

cmd_remove_sandbox() {
    local last
    last="$(sandbox_nodes | tail -1)"
    [[ -n "$last" ]] || die "no sandbox node to remove"
    stop_sessions "$(cat "$NODES/$last")"
    rm -f "$NODES/$last"
    echo "stopped $last"
}

cmd_stop() {
    [[ -d "$NODES" ]] || { echo "no cluster in $CLUSTER_DIR"; return 0; }
    local sids=()
    for f in "$NODES"/*; do [[ -f "$f" ]] && sids+=("$(cat "$f")"); done
    [[ ${#sids[@]} -gt 0 ]] && stop_sessions "${sids[@]}"
    rm -rf "$NODES" "$CLUSTER_DIR/env"
    echo "stopped; logs kept in $CLUSTER_DIR/*/session_latest/logs"
}

cmd_status() {
    load_env
    for f in "$NODES"/*; do
        local n; n="$(session_pids "$(cat "$f")" | wc -l)"
        echo "$(basename "$f"): session $(cat "$f"), $n processes"
    done
    "$RAY" status --address="$RAY_ADDRESS"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    add-sandbox) cmd_add_sandbox ;;
    remove-sandbox) cmd_remove_sandbox ;;
    env) load_env; cat "$CLUSTER_DIR/env" ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
