#!/usr/bin/env bash
# `make run`: a development trust domain in ./var. Until the server and agent
# exist (SDS delivery issue), this initialises the trust domain if there is
# none, mints a demo SVID into ./var/demo, checks it with the openssl CLI and
# shows the CA status and the newest audit events.
set -euo pipefail
cd "$(dirname "$0")/.."
MESHID=${MESHID:-bin/meshid}
TD=${MESHID_TRUST_DOMAIN:-dev.meshid.test}
export MESHID_DATA_DIR=${MESHID_DATA_DIR:-$PWD/var}

if ! "$MESHID" ca status >/dev/null 2>&1; then
  "$MESHID" ca init --trust-domain "$TD"
fi
"$MESHID" svid mint --spiffe-id "spiffe://$(
  "$MESHID" ca status | awk '/^trust domain:/ {print $3}')/demo/$(id -un)" \
  --write "$MESHID_DATA_DIR/demo" --dns localhost
echo
echo "openssl: $(openssl verify -CAfile "$MESHID_DATA_DIR/demo/bundle.pem" \
  -untrusted "$MESHID_DATA_DIR/demo/svid.pem" "$MESHID_DATA_DIR/demo/svid.pem")"
echo
"$MESHID" ca status
echo
"$MESHID" audit query --limit 5
echo
"$MESHID" audit verify
