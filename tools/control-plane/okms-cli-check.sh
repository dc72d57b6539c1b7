#!/usr/bin/env bash
# OVH's own CLI (github.com/ovh/okms-cli, built by `tools/control-plane/build.sh okms`) against
# the okms-emulator, over mTLS and with a bearer token: its `secrets` commands (the REST v2 API:
# create, get, update --cas, version list/get/deactivate, config, list, delete) and its `kv` ones
# (the Vault-KV2-compatible API: put, get, patch, metadata, delete/undelete/destroy, config).
# Unmodified OVH clients must work; every failure here is an emulator bug (or a documented choice).
#
# Usage: tools/control-plane/okms-cli-check.sh   (OKMS_CLI=path/to/okms overrides the binary)
# Runs every step, prints PASS/FAIL for each, exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' tools/control-plane/go.mod)"
okms="${OKMS_CLI:-${OKMS_CONTROL_PLANE_BIN:-target/control-plane/$k8s_version}/okms}"
[ -x "$okms" ] || { echo "okms-cli-check: no okms CLI at $okms (tools/control-plane/build.sh okms)"; exit 1; }
command -v jq >/dev/null || { echo "okms-cli-check: needs jq"; exit 1; }

cargo build -q -p okms-emulator
work="$(mktemp -d)"
token="okms-cli-check-token"
target/debug/okms-emulator --listen 127.0.0.1:0 --state-dir "$work/state" --token "$token" \
  >"$work/emulator.log" 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/state/endpoint" ] && break; sleep 0.1; done
[ -s "$work/state/endpoint" ] || { echo "okms-emulator did not start:"; cat "$work/emulator.log"; exit 1; }
endpoint="$(cat "$work/state/endpoint")"
okms_id="$(cat "$work/state/okms-id")"
s="$work/state"

# A config file for each auth method (the CLI's documented format), and flags as a check of both.
cat >"$work/mtls.yaml" <<EOF
version: 1
profile: default
profiles:
  default:
    restapi:
      endpoint: $endpoint
      ca: $s/ca.pem
      auth:
        type: mtls
        cert: $s/client.pem
        key: $s/client-key.pem
EOF
mtls=(--okmsId "$okms_id")
token_flags=(--endpoint "$endpoint" --ca "$s/ca.pem" --auth-method token --token "$token" --okmsId "$okms_id")

failures=0
out="$work/out"
# step <name> <expect: ok|fail> <command...>: runs it, records PASS/FAIL, keeps stdout in $out.
step() {
  local name="$1" expect="$2"; shift 2
  if "$@" >"$out" 2>"$work/err"; then rc=0; else rc=$?; fi
  if { [ "$expect" = ok ] && [ $rc -eq 0 ]; } || { [ "$expect" = fail ] && [ $rc -ne 0 ]; }; then
    echo "PASS  $name"
  else
    echo "FAIL  $name (exit $rc, expected $expect)"
    echo "      \$ ${*/#/}" | cut -c1-300
    sed 's/^/      out: /' "$out" | head -20
    sed 's/^/      err: /' "$work/err" | head -20
    failures=$((failures + 1))
  fi
}
# check <name> <jq boolean expression on $out>
check() {
  if jq -e "$2" "$out" >/dev/null 2>&1; then echo "PASS  $1"; else
    echo "FAIL  $1: jq '$2' on:"; head -c 2000 "$out" | sed 's/^/      /'; echo
    failures=$((failures + 1))
  fi
}

cli() { "$okms" -c "$work/mtls.yaml" "$@"; }

for auth in mtls token; do
  if [ "$auth" = mtls ]; then flags=("${mtls[@]}"); else flags=("${token_flags[@]}"); fi
  p="cli-check/$auth/app"     # a path with slashes: the SDK escapes them as %2F
  echo "== secrets (REST v2) over $auth"
  step "secrets create" ok cli secrets create "$p" user=alice pass=one "${flags[@]}" --output json
  step "secrets get" ok cli secrets get "$p" --include-data "${flags[@]}" --output json
  check "secrets get: data and version 1" '.version.data.user == "alice" and .version.data.pass == "one" and .metadata.currentVersion == 1'
  step "secrets update --cas 1" ok cli secrets update "$p" user=alice pass=two --cas 1 "${flags[@]}" --output json
  step "secrets update --cas 1 again (stale)" fail cli secrets update "$p" user=alice pass=three --cas 1 "${flags[@]}" --output json
  step "secrets get after update" ok cli secrets get "$p" --include-data "${flags[@]}" --output json
  check "secrets get: version 2 is current" '.version.data.pass == "two" and .metadata.currentVersion == 2'
  step "secrets version list" ok cli secrets version list "$p" "${flags[@]}" --output json
  check "secrets version list: 2 versions" '(. | length) == 2'
  step "secrets version get --version 1" ok cli secrets version get "$p" --version 1 --include-data "${flags[@]}" --output json
  check "secrets version get: data of version 1" '.data.pass == "one"'
  step "secrets version deactivate --version 1" ok cli secrets version deactivate "$p" --version 1 "${flags[@]}" --output json
  step "secrets version list after deactivate" ok cli secrets version list "$p" "${flags[@]}" --output json
  check "secrets version list: version 1 deactivated" '[.[] | select(.id == 1)][0].state == "deactivated"'
  step "secrets version create" ok cli secrets version create "$p" user=alice pass=four --cas 2 "${flags[@]}" --output json
  step "secrets list" ok cli secrets list "${flags[@]}" --output json
  check "secrets list: has the path" "[.. | strings] | index(\"$p\") != null"
  step "secrets config get" ok cli secrets config get "${flags[@]}" --output json
  step "secrets config update --max-versions 20" ok cli secrets config update --max-versions 20 "${flags[@]}" --output json
  step "secrets config get after update" ok cli secrets config get "${flags[@]}" --output json
  check "secrets config: maxVersions 20" '.maxVersions == 20'
  step "secrets config update (restore)" ok cli secrets config update --max-versions 10 "${flags[@]}" --output json
  step "secrets create --cas-required" ok cli secrets create "$p-cas" a=b --cas-required "${flags[@]}" --output json
  step "secrets update without cas (cas required)" fail cli secrets update "$p-cas" a=c "${flags[@]}" --output json
  step "secrets update --cas 1 (cas required)" ok cli secrets update "$p-cas" a=c --cas 1 "${flags[@]}" --output json
  step "secrets delete" ok cli secrets delete "$p-cas" "${flags[@]}"
  step "secrets get after delete" fail cli secrets get "$p-cas" "${flags[@]}" --output json

  k="cli-check/$auth/kv"
  echo "== kv (Vault KV2 API) over $auth"
  step "kv put" ok cli kv put "$k" user=bob pass=one "${flags[@]}" --output json
  step "kv get" ok cli kv get "$k" "${flags[@]}" --output json
  check "kv get: data" '.. | objects | select(has("pass")) | .pass == "one"'
  step "kv put -cas 1" ok cli kv put "$k" user=bob pass=two --cas 1 "${flags[@]}" --output json
  step "kv put -cas 1 again (stale)" fail cli kv put "$k" user=bob pass=three --cas 1 "${flags[@]}" --output json
  step "kv patch" ok cli kv patch "$k" extra=x "${flags[@]}" --output json
  step "kv get after patch" ok cli kv get "$k" "${flags[@]}" --output json
  check "kv get: patched data" '[.. | objects | select(has("pass"))][0] | .pass == "two" and .extra == "x"'
  step "kv get -version 1" ok cli kv get "$k" --version 1 "${flags[@]}" --output json
  check "kv get -version 1: old data" '[.. | objects | select(has("pass"))][0] | .pass == "one"'
  step "kv metadata get" ok cli kv metadata get "$k" "${flags[@]}" --output json
  step "kv metadata put --max-versions 5" ok cli kv metadata put "$k" --max-versions 5 "${flags[@]}" --output json
  step "kv metadata patch --custom-metadata" ok cli kv metadata patch "$k" --custom-metadata owner=team "${flags[@]}" --output json
  step "kv subkeys" ok cli kv subkeys "$k" "${flags[@]}" --output json
  step "kv delete (latest version)" ok cli kv delete "$k" "${flags[@]}"
  step "kv undelete --versions 3" ok cli kv undelete "$k" --versions 3 "${flags[@]}"
  step "kv destroy --versions 1" ok cli kv destroy "$k" --versions 1 "${flags[@]}"
  step "kv config read" ok cli kv config read "${flags[@]}" --output json
  step "kv metadata delete" ok cli kv metadata delete "$k" "${flags[@]}"
  step "kv get after metadata delete" fail cli kv get "$k" "${flags[@]}" --output json
done

echo "== wrong credentials are refused"
step "token auth with a wrong token" fail "$okms" secrets list --endpoint "$endpoint" --ca "$s/ca.pem" \
  --auth-method token --token wrong --okmsId "$okms_id" --retry 0

if [ "$failures" -gt 0 ]; then
  echo "okms-cli-check: $failures failure(s); emulator log: "
  grep -v ' INFO ' "$work/emulator.log" | tail -20
  exit 1
fi
echo "okms-cli-check: all passed"
