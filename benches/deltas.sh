#!/usr/bin/env bash
# Member deltas against full replaces: a CSV directory of G groups of M members each,
# synced to a local HTTP target with a fixed latency; then every group gains one
# member, and that change is synced twice from the same state, once to a target that
# has `add_members`/`remove_members` endpoints (deltas) and once to one that has only
# `group_members` (full replaces). Prints each change sync's requests, body bytes,
# largest body, push phase and push rate against the allowed rate (concurrency ÷
# latency) as a Markdown table.
#
#   benches/deltas.sh [--groups G] [--members M] [--users U] [--latency-ms L]
#                     [--concurrency C] [--debug] [--keep DIR]
#
# Defaults: 1,000 groups of 5,000 members among 6,000 users, 20 ms latency,
# concurrency 16, release build. The smoke version scripts/test runs so the harness
# never rots: --groups 50 --members 200 --users 300 --latency-ms 0 --debug
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

groups=1000 members=5000 users=6000 latency=20 concurrency=16 profile=release keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --groups) groups=$2; shift 2 ;;
    --members) members=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --latency-ms) latency=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$users" -gt "$members" ] || { echo "--users must be larger than --members (a group gains one)" >&2; exit 2; }

if [ "$profile" = release ]; then
  cargo build -q --release --bin dirsync --example mock_target
else
  cargo build -q --bin dirsync --example mock_target
fi
bin=$(realpath "${CARGO_TARGET_DIR:-target}/$profile")

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Group g holds users g*7 … g*7+M-1 (mod U); the change adds user g*7+M to each.
python3 - "$groups" "$members" "$users" <<'PY'
import sys
g, m, u = map(int, sys.argv[1:])
with open("users.csv", "w") as f:
    f.write("id,username,email,enabled\n")
    for i in range(u):
        f.write(f"u{i},user{i},user{i}@example.com,true\n")
for name, extra in (("groups.csv", 0), ("groups-changed.csv", 1)):
    with open(name, "w") as f:
        f.write("id,name,members\n")
        for k in range(g):
            ids = ";".join(f"u{(k * 7 + j) % u}" for j in range(m + extra))
            f.write(f"g{k},group{k},{ids}\n")
PY

# A mock target per sync, so its counts are that sync's alone; sets $port. (Not in a
# command substitution: the server would hold its output open, and the $! is needed.)
start_target() {
  port=$(free_port)
  "$bin/examples/mock_target" --port "$port" --latency-ms "$latency" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/count')" 2>/dev/null && return
    sleep 0.05
  done
  echo "the mock target on port $port did not answer" >&2
  exit 1
}
stat() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$1/$2').read().decode().strip())"; }

write_config() { # $1 = config path, $2 = target port, $3 = "deltas" or "replace"
  cat > "$1" <<CONF
state_db = "state.db"
[source]
kind = "csv"
users = "users.csv"
groups = "groups.csv"
[targets.bench]
base_url = "http://127.0.0.1:$2"
concurrency = $concurrency
timeout = "30s"
[targets.bench.auth]
kind = "none"
[targets.bench.endpoints.group_members]
method = "PUT"
path = "/groups/{{ group.id }}"
body = '{"members": {{ members }}}'
[[targets.bench.groups.rules]]
match = ".*"
target_id = "{{ group.id }}"
[targets.bench.users]
id_attribute = "id"
CONF
  if [ "$3" = deltas ]; then
    cat >> "$1" <<'CONF'
[targets.bench.endpoints.add_members]
method = "POST"
path = "/groups/{{ group.id }}/members"
body = '{"add": {{ members }}}'
[targets.bench.endpoints.remove_members]
method = "POST"
path = "/groups/{{ group.id }}/members/remove"
body = '{"remove": {{ members }}}'
CONF
  fi
}

# Runs dirsync in directory $1 with its config; prints "wall_s push_ms".
run() {
  (cd "$1" && /usr/bin/time -f "%e" -o time.txt "$bin/dirsync" -c dirsync.toml sync >/dev/null 2>cmd.log) || {
    echo "dirsync failed in $1" >&2; tail -20 "$1/cmd.log" >&2; exit 1
  }
  local push_ms
  push_ms=$(sed -n 's/.*Finished the target.*push_ms=\([0-9]*\).*/\1/p' "$1/cmd.log" | head -1)
  echo "$(tail -1 "$1/time.txt") ${push_ms:-0}"
}

# The first sync once, then the same state copied for each way of sending the change.
mkdir -p first
start_target
write_config first/dirsync.toml "$port" deltas
ln -s ../users.csv first/users.csv
cp groups.csv first/groups.csv
read -r first_wall first_push < <(run first)
first_requests=$(stat "$port" count)
[ "$first_requests" -eq "$groups" ] || { echo "first sync sent $first_requests requests, not $groups" >&2; exit 1; }

allowed=$(awk -v c="$concurrency" -v l="$latency" 'BEGIN { if (l > 0) printf "%.0f", c * 1000 / l; else print 0 }')
echo "| change sync | requests | body bytes | largest body | wall s | push ms | push rate /s | of allowed |"
echo "|---|---|---|---|---|---|---|---|"
for way in deltas replace; do
  cp -r first "$way"
  start_target
  write_config "$way/dirsync.toml" "$port" "$way"
  cp groups-changed.csv "$way/groups.csv"
  read -r wall push < <(run "$way")
  requests=$(stat "$port" count)
  read -r bytes largest < <(stat "$port" bytes)
  [ "$requests" -eq "$groups" ] || { echo "$way: the change sent $requests requests, not $groups" >&2; exit 1; }
  if [ "$way" = deltas ] && [ "$largest" -ge 1024 ]; then
    echo "deltas: a request body of $largest bytes (at least 1 KB)" >&2; exit 1
  fi
  rate=$(awk -v r="$requests" -v p="$push" 'BEGIN { printf "%.0f", (p > 0 ? r * 1000 / p : 0) }')
  share=$(awk -v r="$rate" -v a="$allowed" 'BEGIN { if (a > 0) printf "%.1f%%", 100 * r / a; else print "-" }')
  echo "| $way | $requests | $bytes | $largest | $wall | $push | $rate | $share |"
done
echo
echo "First sync: $groups full replaces of $members members in ${first_wall} s (push ${first_push} ms); allowed rate $allowed requests/s (concurrency $concurrency ÷ ${latency} ms)."
