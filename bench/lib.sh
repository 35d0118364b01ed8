# bench/lib.sh: the lifecycle the benchmark scripts share, sourced by bash
# (`. "$(dirname "$0")/lib.sh"`): a temp dir cleaned on exit with every
# process started in it, the issuer key and caller token (mint_token.py), the
# nginx upstream returning 3 bytes, baton's config with one policy, and the
# waits for a port and for /readyz. The callers own the ports, the loads and
# what they print.
#
#   bench_start NAME             T=/tmp/baton-NAME.XXXXXX, PIDS=(), cleanup on EXIT
#   bench_token                  $T/{jwks.json,pub.pem,cert.pem,token}; TOKEN
#   bench_upstream_conf PORT     $T/nginx-up.conf (pid $T/nginx-up.pid)
#   bench_upstream PORT          ... and starts it (nginx daemonises)
#   bench_nginx_proxy_conf PORT UP
#                                $T/nginx-px.conf: nginx's plain reverse proxy
#                                to UP, keepalive upstream (pid $T/nginx-px.pid)
#   bench_baton_conf PORT ADMIN UP [ALLOW_METHODS [POLICY_EXTRA]]
#                                $T/baton.json and $T/policies/bench.json:
#                                1 worker, the bench issuer (RS256, jwks_file),
#                                upstream UP with identity "none", one policy
#                                (host *, prefix /, methods ALLOW_METHODS, a JSON
#                                list, default ["GET"]; POLICY_EXTRA: more members,
#                                each with a leading comma), audit fsync "batch"
#   bench_wait_port PORT         until something accepts, at most 10 s
#   bench_wait_ready ADMIN [S]   until /readyz answers 200, at most S s (10)
set -u
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_PY=/usr/bin/python3

bench_cleanup() {
    local p f
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    # daemons that wrote a pid file into $T (nginx, apache)
    for f in "$T"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$T"
}

bench_start() {
    T=$(mktemp -d "/tmp/baton-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_token() {
    $BENCH_PY "$BENCH_DIR/mint_token.py" "$T" || exit 2
    TOKEN=$(cat "$T/token")
}

bench_upstream_conf() {
    cat >"$T/nginx-up.conf" <<EOF
worker_processes 1;
pid $T/nginx-up.pid;
error_log $T/nginx-up.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    # a head with the caller assertion (~1.1 KB) fits the first buffer, as in
    # application servers (Node 16 KB, Go 1 MB); nginx's 1 KB default would
    # move it to a large buffer and slow the upstream, not baton
    client_header_buffer_size 4k;
    server { listen 127.0.0.1:$1; location / { return 200 "ok\n"; } }
}
EOF
}

bench_upstream() {
    bench_upstream_conf "$1"
    nginx -c "$T/nginx-up.conf" -p "$T" || exit 2
}

bench_nginx_proxy_conf() {
    cat >"$T/nginx-px.conf" <<EOF
worker_processes 1;
pid $T/nginx-px.pid;
error_log $T/nginx-px.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$2; keepalive 64; }
    server {
        listen 127.0.0.1:$1;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
}

bench_baton_conf() {
    local methods=${4:-'["GET"]'}
    mkdir -p "$T/policies"
    cat >"$T/baton.json" <<EOF
{
  "listen": "127.0.0.1:$1",
  "admin_listen": "127.0.0.1:$2",
  "workers": 1,
  "limits": { "max_connections": 20000, "idle_timeout_ms": 600000 },
  "issuers": [{ "name": "bench", "issuer": "https://issuer.bench", "jwks_file": "jwks.json",
                "audiences": ["https://gateway.bench"], "algorithms": ["RS256"] }],
  "upstreams": [{ "name": "up", "url": "http://127.0.0.1:$3", "identity": "none" }],
  "policies": "policies",
  "audit": { "path": "audit.jsonl", "fsync": "batch", "on_failure": "deny" }
}
EOF
    cat >"$T/policies/bench.json" <<EOF
{
  "step": "bench",
  "route": { "host": "*", "path_prefix": "/" },
  "upstream": "up",
  "callers": [{ "issuer": "bench", "claims": { "sub": "arn:aws:iam::123456789012:role/*" } }],
  "allow": [{ "methods": $methods, "paths": ["/**"] }]${5:-}
}
EOF
}

bench_wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: nothing listening on $1" >&2
    return 1
}

bench_wait_ready() {
    local n=$(( ${2:-10} * 20 ))
    for _ in $(seq "$n"); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/readyz" && return 0
        sleep 0.05
    done
    echo "bench: baton never became ready (admin port $1)" >&2
    return 1
}
