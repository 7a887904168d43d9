#!/usr/bin/env bash
# Issue 14's comparison, in one run on one machine: a POS payment against a bare banking
# transaction (TPC-B) on each backend.
#   PostgreSQL: pgbench -i -s 10, then pgbench -c 8 -j 2 -T 15, against `omamori bench pos` on PostgreSQL;
#   SQLite: `omamori bench tpcb` (the same transaction, WAL, synchronous = FULL, one connection)
#           against `omamori bench pos` on SQLite.
# Prints the four figures and the two ratios. Usage:
#   bench/compare.sh [PAYMENTS]      (default 10000; the payments run at concurrency 8)
# Environment: COMPARE_PG (a PostgreSQL server's URL without a database name, default
# postgres://postgres@127.0.0.1:5432), COMPARE_BIN (default: a release build made here).
set -euo pipefail
cd "$(dirname "$0")/.."
payments="${1:-10000}"
pg="${COMPARE_PG:-postgres://postgres@127.0.0.1:5432}"
if [ -z "${COMPARE_BIN:-}" ]; then
  echo "building the release binary" >&2
  cargo build --release --quiet
  COMPARE_BIN="${CARGO_TARGET_DIR:-target}/release/omamori"
fi
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian: postgresql-client)" >&2; exit 1; }

fresh_db() { psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null; }
figure() { grep -oE "$1" | grep -oE '^[0-9.]+' | head -n1; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sm)"
echo "== pgbench TPC-B on PostgreSQL (scale 10, -c 8 -j 2 -T 15)"
fresh_db omamori_tpcb
pgbench -i -s 10 -q "$pg/omamori_tpcb" >/dev/null 2>&1
pg_tpcb_out=$(pgbench -c 8 -j 2 -T 15 "$pg/omamori_tpcb" 2>&1)
echo "$pg_tpcb_out" | grep -E "^tps|latency average"
pg_tpcb=$(echo "$pg_tpcb_out" | grep -E '^tps' | figure '[0-9.]+ \(without')

echo "== omamori bench pos on PostgreSQL ($payments payments, concurrency 8)"
fresh_db omamori_bench
pg_pos_out=$("$COMPARE_BIN" bench pos --database-url "$pg/omamori_bench" --payments "$payments" --concurrency 8 2>&1)
echo "$pg_pos_out" | grep -E "^payments|^ledger"
pg_pos=$(echo "$pg_pos_out" | figure '[0-9.]+ payments/s')

echo "== bare SQLite TPC-B (omamori bench tpcb, 15 s)"
sq_tpcb_out=$("$COMPARE_BIN" bench tpcb --seconds 15 2>&1)
echo "$sq_tpcb_out" | grep -E "^transactions"
sq_tpcb=$(echo "$sq_tpcb_out" | figure '[0-9.]+ transactions/s')

echo "== omamori bench pos on SQLite ($payments payments, concurrency 8)"
sq_pos_out=$("$COMPARE_BIN" bench pos --payments "$payments" --concurrency 8 2>&1)
echo "$sq_pos_out" | grep -E "^payments|^ledger"
sq_pos=$(echo "$sq_pos_out" | figure '[0-9.]+ payments/s')

psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS omamori_tpcb WITH (FORCE)" -c "DROP DATABASE IF EXISTS omamori_bench WITH (FORCE)" >/dev/null
echo "== summary"
printf 'PostgreSQL: pgbench TPC-B %s tps, POS payments %s/s: %s x\n' "$pg_tpcb" "$pg_pos" "$(echo "scale=2; $pg_pos / $pg_tpcb" | bc)"
printf 'SQLite:     bare TPC-B    %s tps, POS payments %s/s: %s x\n' "$sq_tpcb" "$sq_pos" "$(echo "scale=2; $sq_pos / $sq_tpcb" | bc)"
