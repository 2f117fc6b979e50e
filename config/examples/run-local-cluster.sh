#!/usr/bin/env bash
# Builds Stoa and runs a local 3-node cluster from node1.toml, node2.toml and node3.toml (UDP ports
# 7401-7403 on 127.0.0.1). Creates certificates in certs/ on first run; data and logs go to data/.
# Ctrl-C stops the three nodes this script started, and only those.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
repo_root="$(cd ../.. && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo_root/$target_dir" ;; esac
node_bin="$target_dir/release/stoa-node"

(cd "$repo_root" && cargo build --release -p stoa-node -p stoa-client)

if [[ ! -f certs/ca.pem ]]; then
    echo "creating certificates in config/examples/certs"
    "$node_bin" certs --dir certs --nodes 3
fi

mkdir -p data
pids=()

stop_nodes() {
    if ((${#pids[@]} > 0)); then
        echo "stopping nodes (pids ${pids[*]})"
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -f data/pids
}
trap stop_nodes EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for n in 1 2 3; do
    "$node_bin" run --config "node$n.toml" >"data/node$n.log" 2>&1 &
    pids+=("$!")
done
printf '%s\n' "${pids[@]}" >data/pids

sleep 1
for i in 0 1 2; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "node $((i + 1)) exited at start; last lines of config/examples/data/node$((i + 1)).log:" >&2
        tail -n 20 "data/node$((i + 1)).log" >&2 || true
        exit 1
    fi
done

cat <<MSG
Stoa cluster running: nodes 1-3 on 127.0.0.1:7401-7403 (pids ${pids[*]}, also in config/examples/data/pids).
Logs: config/examples/data/node1.log ... node3.log

First admin token (from config/examples/):
  ../../target/release/stoa-node admin-token --config node1.toml

Connect from the repository root:
  STOA_SERVER=127.0.0.1:7401 STOA_CA=config/examples/certs/ca.pem target/release/stoa ...

Press Ctrl-C to stop the cluster.
MSG

wait
