#!/bin/sh
# install-cuda-toolkit.sh installs Debian 12's nvidia-cuda-toolkit (CUDA 11.8:
# nvcc and ptxas), which `make ptx` and `make ptx-check` need. It is
# idempotent: running it again on a machine that already has nvcc does
# nothing, and the apt components are only added once.
set -eu

if command -v nvcc >/dev/null 2>&1 && command -v ptxas >/dev/null 2>&1; then
	echo "nvidia-cuda-toolkit already installed: $(nvcc --version | tail -n 1)"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
else
	SUDO=
fi

# nvidia-cuda-toolkit lives in Debian's contrib and non-free components.
SOURCES=/etc/apt/sources.list.d/debian.sources
if [ -f "$SOURCES" ]; then
	if grep -q '^Components:' "$SOURCES" && ! grep '^Components:' "$SOURCES" | grep -Eq ' non-free( |$)'; then
		$SUDO sed -i -E '/^Components:/{/contrib/!s/$/ contrib/; / non-free( |$)/!s/$/ non-free/}' "$SOURCES"
	fi
elif [ -f /etc/apt/sources.list ]; then
	if ! grep -Eq '^deb .* non-free( |$)' /etc/apt/sources.list; then
		$SUDO sed -i -E '/^deb /{/contrib/!s/$/ contrib/; / non-free( |$)/!s/$/ non-free/}' /etc/apt/sources.list
	fi
fi

$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nvidia-cuda-toolkit
nvcc --version | tail -n 1
