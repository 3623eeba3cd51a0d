#!/usr/bin/env bash
# Debian's Slurm (slurmctld, slurmd, client commands) and munge, for the `slurm` tox env.
# Root only (CI runs as root); a no-op where they are installed already.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_slurm.sh: needs root to apt-get install slurm-wlm munge" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
