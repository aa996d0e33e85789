#!/usr/bin/env bash
# Runs voicegate with the example configuration (config/voicegate.toml): SIP on
# 127.0.0.1:5060 (UDP and TCP), metrics on http://127.0.0.1:8080/metrics, the
# echo agent answering every number. Extra arguments go to `voicegate serve`
# (e.g. --sip 127.0.0.1:5070). Stop with Ctrl-C (twice to end live calls).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/dev/setup.sh
exec cargo run --release -p voicegate -- serve --config config/voicegate.toml "$@"
