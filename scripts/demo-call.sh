#!/usr/bin/env bash
# Places the demo call against a running stack (`make run` or `make start`):
# demo customer 1 (trunk-1, source 127.0.0.101) dials +1 212 555 1234 from +1 305 555 0100.
# A SIPp vendor gateway listens on each demo vendor address (127.0.0.201-204); the one the
# engine picks answers, the call is held for 2 s and hung up with BYE.
#   PROXY=127.0.0.1:5060 DIALED=12125551234 CALLER=13055550100 HOLD_MS=2000 (defaults)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proxy="${PROXY:-127.0.0.1:5060}"
dialed="${DIALED:-12125551234}"
caller="${CALLER:-13055550100}"
hold="${HOLD_MS:-2000}"
work="$(mktemp -d)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for v in 201 202 203 204; do
  sipp -sf "$here/sipp-scenarios/vendor_answer.xml" -i "127.0.0.$v" -p 5060 -m 1 -nostdin \
       -trace_msg -message_file "$work/vendor-$v.msg" >/dev/null 2>&1 &
  pids+=($!)
done
# wait until all four vendor gateways are bound
for _ in $(seq 1 100); do
  bound=$(ss -Hlun | grep -cE '127\.0\.0\.20[1-4]:5060 ' || true)
  [ "$bound" -ge 4 ] && break
  sleep 0.1
done

echo "demo call: 127.0.0.101 -> $proxy, dialing $dialed from $caller"
if sipp -sf "$here/sipp-scenarios/customer_call.xml" -i 127.0.0.101 -p 5060 "$proxy" \
        -s "$dialed" -key caller "$caller" -m 1 -d "$hold" -nostdin -timeout 30s -timeout_error \
        -trace_msg -message_file "$work/customer.msg" >"$work/customer.out" 2>&1; then
  answered=$(grep -l '^INVITE ' "$work"/vendor-*.msg 2>/dev/null | sed -E 's/.*vendor-([0-9]+).msg/127.0.0.\1/' || true)
  call_id=$(grep -m1 '^Call-ID:' "$work/customer.msg" | awk '{print $2}')
  echo "demo call: 200 OK, held ${hold} ms, BYE answered 200 — carried by the vendor at ${answered:-?}"
  echo "demo call: Call-ID $call_id — its CDR:"
  echo "  PGPASSFILE=.data/secrets/pgpass psql postgresql://warp@127.0.0.1:55432/warp -c \"SELECT call_id, sip_code, duration_s, to_e164, gateway FROM cdr.cdrs WHERE call_id = '$call_id'\""
else
  echo "demo call FAILED; SIPp said:" >&2
  tail -40 "$work/customer.out" >&2
  exit 1
fi
