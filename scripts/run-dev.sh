#!/usr/bin/env bash
# `make run`: `meshid dev` — server and agent in one process on a dev trust
# domain in ./var (created on first start), with a registration entry for
# you (your uid), so that in another terminal
#   bin/meshid svid fetch --socket var/run/agent.sock
# prints your SVID. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESHID_DATA_DIR=${MESHID_DATA_DIR:-$PWD/var}
exec "${MESHID:-bin/meshid}" dev --trust-domain "${MESHID_TRUST_DOMAIN:-dev.meshid.test}" "$@"
