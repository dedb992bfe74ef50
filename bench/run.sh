#!/usr/bin/env bash
# dnsd benchmark: dnsperf against NSD (and Knot) and dnsd serving the same generated cluster (see bench/README.md).
#
#   bash bench/run.sh                          # what `make bench` runs: cluster (1,000 services), cache, iterative
#   SERVICES=100000 bash bench/run.sh          # the cluster scenario at 100,000 services only (NSD, Knot, dnsd)
#   SERVICES=all bash bench/run.sh             # every scenario: cluster at 1,000, 10,000 and 100,000, cache, iterative
#   BENCH_SECONDS=5 bash bench/run.sh          # a quick run
#   BENCH_SERVERS=dnsd bash bench/run.sh       # one server only (nsd, knot or dnsd)
#   SCENARIO=cache bash bench/run.sh           # one scenario: cluster, cache, iterative or all
#
# SERVICES: one size or a comma list (1000,10000,100000; "all" is that list). SCENARIO defaults to all when SERVICES
# is unset or "all", else to cluster. Each size's data comes from bench/gen.py into bench/out (1,000 services) or
# bench/out/s<N>, cached: a rerun with the same parameters (and gen.py) generates nothing. The cluster scenario is
# bench/bench.py: per server, the ready time, memory, the query mix (a warm-up pass, then the measured one) and
# BENCH_UNIQUE (3,000,000) never-repeated names asked once each. Then cache and iterative (bench/resolver.py: dnsd and
# Unbound as resolvers, a cache-hit run behind one NSD and a cold iterative pass over a loopback root/TLD/leaf
# hierarchy on port 53, which needs root), then bench/summary.py prints one table of everything.
#
# Knobs: BENCH_SECONDS (per measured dnsperf run: 20 at 1,000 services and for cache, 10 at larger sizes),
# BENCH_WARM_SECONDS (3), BENCH_START_TIMEOUT (300 s from a server's start to its first answer), BENCH_WORKERS
# (dnsd --workers N, passed only when set), BENCH_UNIQUE, BENCH_CLIENTS (4), BENCH_THREADS (4), BENCH_OUTSTANDING
# (500), BENCH_SERVERS, resolver.py's BENCH_NAMES (1000), BENCH_CONCURRENCY (50), BENCH_DEADLINE (120),
# BENCH_RESOLVERS (dnsd,unbound), BENCH_NETNS (auto), PYTHON (the interpreter that runs dnsd and the scripts;
# default .venv/bin/python, else python3), BENCH_STRICT=1 (exit 2 when a target is not met). Output: printed, and
# bench/out/summary.txt, bench/out[/s<N>]/ (results.txt, results.json, dnsperf-*.txt, compare.txt, dnsd.log, nsd/,
# knot/), bench/out/resolver/.
set -euo pipefail

services="${SERVICES:-}"
if [[ -z "$services" || "$services" == all ]]; then
  default_scenario=all
else
  default_scenario=cluster
fi
[[ -z "$services" ]] && services=1000
[[ "$services" == all ]] && services=1000,10000,100000
IFS=, read -r -a sizes <<<"$services"
for n in "${sizes[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "bench: SERVICES must be numbers (1000,10000,...) or all, not '$services'" >&2; exit 1; }
done
scenario="${SCENARIO:-$default_scenario}"
case "$scenario" in
  all | cluster | cache | iterative) ;;
  *) echo "bench: SCENARIO must be cluster, cache, iterative or all, not '$scenario'" >&2; exit 1 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out="$here/out"
cd "$repo"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON="$(command -v python3 || true)"; fi
fi
if [[ -z "$PYTHON" ]]; then
  echo "bench: no Python found: run 'make test' (it creates .venv) or set PYTHON" >&2
  exit 1
fi
export PYTHON

# tool -> Debian package
declare -A pkg=([dnsperf]=dnsperf [nsd]=nsd [nsd-checkconf]=nsd [nsd-checkzone]=nsd [dig]=bind9-dnsutils [taskset]=util-linux
  [unbound]=unbound [unbound-checkconf]=unbound)
tools=(dnsperf nsd nsd-checkconf nsd-checkzone dig taskset)
[[ "$scenario" == cluster ]] || tools+=(unbound unbound-checkconf)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkg[$tool]}")
done
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the nsd package may start a system-wide NSD on port 53; the benchmark does not use it
  else
    echo "bench: missing tools; install the Debian packages: ${missing[*]}" >&2
    echo "bench:   sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! "$PYTHON" -c 'import yaml, dns.message' 2>/dev/null; then
  echo "bench: $PYTHON lacks PyYAML or dnspython; run 'make test' (it creates .venv) or set PYTHON" >&2
  exit 1
fi
if [[ "$(nproc)" -lt 2 ]]; then
  echo "bench: WARNING: only $(nproc) CPU; server and dnsperf will share it and the figures mean little" >&2
fi

started=$SECONDS
rc=0
summary_args=()
timings=()
if [[ "$scenario" == all || "$scenario" == cluster ]]; then
  for n in "${sizes[@]}"; do
    t0=$SECONDS
    if [[ "$n" == 1000 ]]; then dir="$out"; else dir="$out/s$n"; fi
    mkdir -p "$dir"
    "$PYTHON" "$here/gen.py" --services "$n" --unique "${BENCH_UNIQUE:-3000000}" --out "$dir" --cached
    rm -f "$dir/results.json"
    "$PYTHON" "$here/bench.py" --out "$dir" "$@" || rc=$?
    summary_args+=(--cluster "$dir/results.json")
    timings+=("cluster $n: $((SECONDS - t0)) s")
  done
fi
if [[ "$scenario" != cluster ]]; then
  t0=$SECONDS
  rm -f "$out/resolver/results.json"
  # resolver.py skips the iterative scenario, saying so, when not run as root (its NSD servers use port 53)
  "$PYTHON" "$here/resolver.py" --out "$out/resolver" --scenario "$scenario" || {
    code=$?
    ((rc)) || rc=$code
  }
  summary_args+=(--resolver "$out/resolver/results.json")
  if [[ "$scenario" == all ]]; then label="cache and iterative"; else label="$scenario"; fi
  timings+=("$label: $((SECONDS - t0)) s")
fi
"$PYTHON" "$here/summary.py" "${summary_args[@]}" --out "$out/summary.txt"
echo "bench: $(IFS=';'; echo "${timings[*]}" | sed 's/;/; /g'); all: $((SECONDS - started)) s"
exit "$rc"
