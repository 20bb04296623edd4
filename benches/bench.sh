#!/usr/bin/env bash
# dirsync end-to-end benchmark: a generated directory in a private slapd, a local
# HTTP target with a fixed latency, and dirsync's main jobs timed as whole processes
# (wall time and peak RSS from /usr/bin/time), beside the floor: an `ldapsearch`
# paged dump of the same entries to /dev/null. Prints a Markdown table of medians.
#
#   benches/bench.sh [--users N] [--groups M] [--runs R] [--latency-ms L]
#                    [--concurrency C] [--watch-changes W] [--debug] [--keep DIR]
#
# Defaults: 100,000 users, 10,000 groups, 3 runs, 20 ms latency, concurrency 16,
# 100 watched changes (`dirsync run` with `watch = true`: the time from each single
# directory change to the target's request), release build. The smoke version CI
# runs so the harness never rots:
#   --users 5000 --groups 500 --runs 1 --latency-ms 0 --watch-changes 5 --debug
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

users=100000 groups=10000 runs=3 latency=20 concurrency=16 watch_changes=100 profile=release keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --latency-ms) latency=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --watch-changes) watch_changes=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

scripts/install-test-deps
if [ "$profile" = release ]; then
  cargo build -q --release --bin dirsync --example gendir --example mock_target
else
  cargo build -q --bin dirsync --example gendir --example mock_target
fi
bin=$(realpath "${CARGO_TARGET_DIR:-target}/$profile")

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -n "$keep" ] || rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$bin/examples/gendir" --users "$users" --groups "$groups" --seed 1 --out "$work/base" 2>"$work/gen.log"
"$bin/examples/gendir" --users "$users" --groups "$groups" --seed 1 --change-percent 1 --out "$work/changed" 2>>"$work/gen.log"
# A few changes (0.01%: 10 users and 30 memberships of 100,000 users), the common case.
"$bin/examples/gendir" --users "$users" --groups "$groups" --seed 1 --change-percent 0.01 --out "$work/few" 2>>"$work/gen.log"
memberships=$(sed -n 's/.* groups, \([0-9]*\) memberships.*/\1/p' "$work/gen.log" | head -1)

base_dn="dc=example,dc=com"
# One slapd database, with the syncprov overlay (content synchronisation), kept as
# loaded: the "1% changed" runs each start from it and apply the changes with
# ldapmodify, as a directory changes in use.
for v in base; do
  mkdir -p "$work/slapd-$v/db"
  cat > "$work/slapd-$v/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $work/slapd-$v/slapd.pid
argsfile $work/slapd-$v/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
sizelimit 500
database mdb
maxsize 4294967296
suffix "$base_dn"
rootdn "cn=admin,$base_dn"
rootpw bench-secret
directory $work/slapd-$v/db
index entryCSN,entryUUID eq
access to * by * read
overlay syncprov
syncprov-checkpoint 100 10
syncprov-sessionlog 100000
CONF
  slapadd -q -w -f "$work/slapd-$v/slapd.conf" -l "$work/$v/directory.ldif"
  cp -a "$work/slapd-$v/db" "$work/slapd-$v/db.loaded"
done
# Back to the directory as loaded (slapd stopped first).
restore_slapd() {
  [ -z "$slapd_pid" ] || { kill "$slapd_pid"; wait "$slapd_pid" 2>/dev/null || true; slapd_pid=""; }
  rm -rf "$work/slapd-base/db"
  cp -a "$work/slapd-base/db.loaded" "$work/slapd-base/db"
}

ldap_port=$(free_port)
slapd_pid=""
start_slapd() {
  [ -z "$slapd_pid" ] || { kill "$slapd_pid"; wait "$slapd_pid" 2>/dev/null || true; }
  slapd -f "$work/slapd-$1/slapd.conf" -h "ldap://127.0.0.1:$ldap_port/" -d 0 >"$work/slapd-$1.log" 2>&1 &
  slapd_pid=$!
  pids+=("$slapd_pid")
  for _ in $(seq 100); do
    ldapsearch -x -H "ldap://127.0.0.1:$ldap_port" -b "" -s base >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "slapd did not start" >&2; cat "$work/slapd-$1.log" >&2; exit 1
}

target_port=$(free_port)
"$bin/examples/mock_target" --port "$target_port" --latency-ms "$latency" &
pids+=($!)
count() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$target_port/count').read().decode().strip())"; }
for _ in $(seq 100); do count >/dev/null 2>&1 && break; sleep 0.05; done

write_config() { # $1 = config path, $2 = source block
  cat > "$1" <<CONF
state_db = "state.db"
$2
# The benchmark measures speed, not the limits: 0 turns each off, so the 1% change
# (about 3,000 memberships moved) is pushed.
[safety]
max_removed_memberships = 0
max_removed_memberships_percent = 0
max_disabled_users = 0
max_disabled_users_percent = 0
[targets.bench]
preset = "onlyoffice-group-members"
base_url = "http://127.0.0.1:$target_port"
concurrency = $concurrency
timeout = "30s"
[targets.bench.auth]
value = "bench-key"
[[targets.bench.groups.rules]]
match = ".*"
target_id = "{{ group.id }}"
[targets.bench.users]
id_attribute = "id"
CONF
}
write_config "$work/ldap.toml" "[source]
kind = \"ldap\"
preset = \"openldap\"
url = \"ldap://127.0.0.1:$ldap_port\"
bind_dn = \"cn=admin,$base_dn\"
bind_password = \"bench-secret\"
page_size = 500
base_dn = \"$base_dn\"
[source.users]
base_dn = \"ou=people,$base_dn\"
[source.groups]
base_dn = \"ou=groups,$base_dn\""
write_config "$work/csv.toml" "[source]
kind = \"csv\"
users = \"base/users.csv\"
groups = \"base/groups.csv\""

# Runs a command under /usr/bin/time; appends "wall_s rss_mb requests" to $1.
measure() {
  local out=$1; shift
  local before after
  before=$(count)
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/cmd.log" || {
    local rc=$?
    # 3 = partial, 4 = refused: still results, but worth a look.
    if [ $rc -ne 3 ] && [ $rc -ne 4 ]; then echo "command failed ($rc): $*" >&2; tail -20 "$work/cmd.log" >&2; exit 1; fi
  }
  after=$(count)
  read -r wall rss < <(tail -1 "$work/time.txt")
  # dirsync logs how long the push phase took (`push_ms=`); 0 for other commands.
  local push_ms
  push_ms=$(sed -n 's/.*Finished the target.*push_ms=\([0-9]*\).*/\1/p' "$work/cmd.log" | head -1)
  echo "$wall $((rss / 1024)) $((after - before)) ${push_ms:-0}" >> "$out"
}
col() { awk -v c="$1" '{print $c}' "$2" | median; }

cd "$work"
rm -f floor.txt floor-changed.txt first.txt nochange.txt change.txt few.txt resync.txt csv.txt watch.txt
floor() { # $1 = results file
  measure "$1" ldapsearch -x -LLL -H "ldap://127.0.0.1:$ldap_port" -D "cn=admin,$base_dn" -w bench-secret \
    -b "$base_dn" -E pr=500/noprompt "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames))" \
    entryUUID uid mail cn givenName sn telephoneNumber member uniqueMember memberUid
}
start_slapd base
for _ in $(seq "$runs"); do
  rm -f state.db state.db-wal state.db-shm
  measure first.txt "$bin/dirsync" -c ldap.toml sync
done
cp state.db state-base.db
# On a shared machine the speed drifts from minute to minute: each timed sync is
# paired with a floor measured just before it, on the same server, and the ratio is
# the median of the pairs' ratios.
for _ in $(seq "$runs"); do
  floor floor.txt
  measure nochange.txt "$bin/dirsync" -c ldap.toml sync
done
for _ in $(seq "$runs"); do
  restore_slapd
  start_slapd base
  cp state-base.db state.db; rm -f state.db-wal state.db-shm
  ldapmodify -x -H "ldap://127.0.0.1:$ldap_port" -D "cn=admin,$base_dn" -w bench-secret \
    -f "$work/changed/changes.ldif" >/dev/null
  floor floor-changed.txt
  measure change.txt "$bin/dirsync" -c ldap.toml sync
done
for _ in $(seq "$runs"); do
  restore_slapd
  start_slapd base
  cp state-base.db state.db; rm -f state.db-wal state.db-shm
  ldapmodify -x -H "ldap://127.0.0.1:$ldap_port" -D "cn=admin,$base_dn" -w bench-secret \
    -f "$work/few/changes.ldif" >/dev/null
  measure few.txt "$bin/dirsync" -c ldap.toml sync
done
restore_slapd
start_slapd base
for _ in $(seq "$runs"); do
  cp state-base.db state.db; rm -f state.db-wal state.db-shm
  measure resync.txt "$bin/dirsync" -c ldap.toml resync
done
rm -f state.db state.db-wal state.db-shm
"$bin/dirsync" -c csv.toml sync >/dev/null 2>&1
for _ in $(seq "$runs"); do measure csv.txt "$bin/dirsync" -c csv.toml sync; done

# Watch mode: the service with `watch = true` on the directory as loaded; one group
# gains one member at a time, and each change is timed from ldapmodify's return to
# the target's next request.
restore_slapd
start_slapd base
cp state-base.db state.db; rm -f state.db-wal state.db-shm
{ cat ldap.toml; printf '\n[daemon]\nwatch = true\ndebounce = "200ms"\nrun_at_start = true\n'; } > ldap-watch.toml
"$bin/dirsync" -c ldap-watch.toml run 2>watch.log &
watch_pid=$!
pids+=("$watch_pid")
python3 - "$ldap_port" "$target_port" "$base_dn" "$watch_changes" > watch.txt <<'PY'
import subprocess, sys, time, urllib.request
port, target, base, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
count = lambda: int(urllib.request.urlopen(f"http://127.0.0.1:{target}/count").read())
def modify(ldif):
    subprocess.run(["ldapmodify", "-x", "-H", f"ldap://127.0.0.1:{port}", "-D", f"cn=admin,{base}",
                    "-w", "bench-secret"], input=ldif.encode(), check=True, stdout=subprocess.DEVNULL)
def settle():  # until the service has been quiet for a second
    last, since = count(), time.time()
    while time.time() - since < 1.0:
        time.sleep(0.05)
        if count() != last: last, since = count(), time.time()
settle()
modify(f"dn: cn=watched,ou=groups,{base}\nchangetype: add\nobjectClass: groupOfNames\ncn: watched\n"
       f"member: uid=user000000,ou=people,{base}\n")
settle()
for i in range(1, n + 1):
    before = count()
    modify(f"dn: cn=watched,ou=groups,{base}\nchangetype: modify\nadd: member\n"
           f"member: uid=user{i:06d},ou=people,{base}\n-\n")
    start = time.time()
    while count() == before:
        if time.time() - start > 60: sys.exit(f"change {i} did not reach the target within 60 s")
        time.sleep(0.005)
    print(f"{time.time() - start:.3f}")
PY
kill "$watch_pid"; wait "$watch_pid" 2>/dev/null || true

floor=$(col 1 floor.txt)
ratio() { awk -v a="$1" -v b="$floor" 'BEGIN { printf "%.2f", a / b }'; }
# The median of per-pair ratios: $1 = the sync's results, $2 = its floors.
paired() { paste -d' ' <(awk '{print $1}' "$1") <(awk '{print $1}' "$2") | awk '{printf "%.4f\n", $1 / $2}' | median | awk '{printf "%.2f", $1}'; }
first_req=$(col 3 first.txt)
first_push_ms=$(col 4 first.txt)
# The push phase as dirsync timed it: from the first request to the last record.
push_rate=$(awk -v r="$first_req" -v p="$first_push_ms" 'BEGIN { printf "%.0f", (p > 0 ? r * 1000 / p : 0) }')
allowed=$(awk -v c="$concurrency" -v l="$latency" 'BEGIN { if (l > 0) printf "%.0f", c * 1000 / l; else print "unbounded" }')

echo
echo "$users users, $groups groups, $memberships memberships; $runs run(s), medians; target latency ${latency} ms, concurrency $concurrency; $profile build"
echo
echo "| job | wall s | × floor | peak RSS MB | requests |"
echo "|---|---|---|---|---|"
echo "| floor: ldapsearch paged dump to /dev/null | $floor | 1.00 | $(col 2 floor.txt) | - |"
echo "| floor, changed directory | $(col 1 floor-changed.txt) | | $(col 2 floor-changed.txt) | - |"
for row in "first sync:first.txt" "no-change sync:nochange.txt:floor.txt" "sync after 1% change:change.txt:floor-changed.txt" "sync after 0.01% change:few.txt" "resync:resync.txt" "CSV no-change sync:csv.txt"; do
  IFS=: read -r name file pair <<<"$row"
  w=$(col 1 "$file")
  if [ -n "$pair" ]; then r="$(paired "$file" "$pair") (paired)"; else r=$(ratio "$w"); fi
  echo "| $name | $w | $r | $(col 2 "$file") | $(col 3 "$file") |"
done
percentile() { sort -g "$2" | awk -v p="$1" '{a[NR]=$1} END {i=int(p*NR+0.999); if (i<1) i=1; print a[i]}'; }
echo
echo "Watch mode: $(wc -l < watch.txt) single changes reached the target in a median of $(percentile 0.5 watch.txt) s, 95th percentile $(percentile 0.95 watch.txt) s (debounce 200 ms)."
echo "Push rate of the first sync: $push_rate requests/s over a push phase of $first_push_ms ms, against an allowed $allowed (concurrency ÷ latency)."
if [ "$latency" -gt 0 ] && command -v curl >/dev/null; then
  # What the mock really takes per request, seen by curl on one kept-alive
  # connection: the ceiling any client can reach, beside the nominal one.
  real_ms=$(for _ in $(seq 25); do
      printf 'url = "http://127.0.0.1:%s/latency-probe"\nrequest = "POST"\ndata = "{}"\noutput = "/dev/null"\nwrite-out = "%%{time_total}\\n"\n' "$target_port"
    done | curl -s -K - | tail -n 20 | sort -n | awk '{ t[NR] = $1 } END { printf "%.2f", t[int((NR + 1) / 2)] * 1000 }')
  ceiling=$(awk -v c="$concurrency" -v l="$real_ms" 'BEGIN { printf "%.0f", c * 1000 / l }')
  echo "The mock answers in $real_ms ms (curl, median of 20 requests on one connection): no client can exceed $ceiling requests/s; the first sync reached $(awk -v a="$push_rate" -v b="$ceiling" 'BEGIN { printf "%.1f", 100 * a / b }')% of that."
fi
# The 1% change apart from its push: each run's wall time less the push phase
# dirsync timed (from its first request to its last record), median over the runs.
apart() { echo "everything but the push took $(awk '{ printf "%.2f\n", $1 - $4 / 1000 }' "$1" | median) s (wall $(col 1 "$1") s, push $(awk '{ printf "%.2f\n", $4 / 1000 }' "$1" | median) s)"; }
echo "Sync after 1% change: $(apart change.txt)."
echo "Sync after 0.01% change ($(grep -c '^dn:' "$work/few/changes.ldif") changed entries): $(apart few.txt)."

# The harness checks itself: a broken run must not produce a plausible table.
[ "$(col 3 first.txt)" -eq "$groups" ] || { echo "first sync sent $(col 3 first.txt) requests, expected $groups" >&2; exit 1; }
[ "$(col 3 nochange.txt)" -eq 0 ] || { echo "no-change sync sent requests" >&2; exit 1; }
[ "$(col 3 csv.txt)" -eq 0 ] || { echo "CSV no-change sync sent requests" >&2; exit 1; }
[ "$(col 3 change.txt)" -gt 0 ] || { echo "the 1% change sent nothing" >&2; exit 1; }
[ "$(col 3 few.txt)" -gt 0 ] || { echo "the 0.01% change sent nothing" >&2; exit 1; }
