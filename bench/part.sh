# Sourced by the prepared GPU scripts (bench/gpu.sh, bench/monitor_gpu.sh): `part NAME COMMAND...`
# runs one part and reports how it ended; a failed part sets `status=1` and the next still runs.
status=0
part() {
  echo "== $1"
  local t0=$SECONDS
  "${@:2}"
  local rc=$?
  echo "== $1: exit $rc, $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
}
