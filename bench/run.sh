#!/usr/bin/env bash
# dnsd benchmark: dnsperf against NSD and dnsd serving the same 1,000 services (see bench/README.md).
#
#   bash bench/run.sh                      # 20 s per server (what `make bench` runs)
#   BENCH_SECONDS=5 bash bench/run.sh      # a quick run
#   BENCH_SERVERS=nsd bash bench/run.sh    # one server only (nsd or dnsd)
#   SCENARIO=cache bash bench/run.sh       # one scenario: cluster, cache, iterative or all (the default)
#
# Scenarios: cluster (bench/bench.py, below: dnsperf against NSD and dnsd), then cache and iterative
# (bench/resolver.py: dnsd and Unbound as resolvers, a cache-hit run behind one NSD and a cold iterative pass
# over a loopback root/TLD/leaf hierarchy on port 53, which needs root), then one table of all of them.
# Their knobs: BENCH_NAMES (1000), BENCH_CONCURRENCY (50 queries in flight for the warm-up and iterative passes),
# BENCH_DEADLINE (120 s for one iterative pass), BENCH_RESOLVERS (dnsd,unbound), BENCH_NETNS (auto: as root,
# bench/resolver.py runs in a network namespace of its own; no); output in bench/out/resolver/.
#
# Other knobs: BENCH_CLIENTS (4), BENCH_THREADS (4), BENCH_OUTSTANDING (500), PYTHON (the interpreter
# that runs dnsd and the scripts; default .venv/bin/python, else python3), BENCH_STRICT=1 (exit 2 when
# the issue-2 target is not met). Output: printed, and in bench/out/ (results.txt, results.json,
# dnsperf-*.txt, compare.txt, dnsd.log, nsd/).
set -euo pipefail

scenario="${SCENARIO:-all}"
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

if [[ "$scenario" == cluster ]]; then
  mkdir -p "$out"
  "$PYTHON" "$here/gen.py" --out "$out"
  exec "$PYTHON" "$here/bench.py" --out "$out" "$@"
fi

rc=0
cluster_args=()
if [[ "$scenario" == all ]]; then
  mkdir -p "$out"
  "$PYTHON" "$here/gen.py" --out "$out"
  "$PYTHON" "$here/bench.py" --out "$out" "$@" || rc=$?
  cluster_args=(--cluster-results "$out/results.json")
fi
# resolver.py skips the iterative scenario, saying so, when not run as root (its NSD servers use port 53)
"$PYTHON" "$here/resolver.py" --out "$out/resolver" --scenario "$scenario" "${cluster_args[@]}" || {
  code=$?
  ((rc)) || rc=$code
}
exit "$rc"
