# The pipeline for GPU hosts: exactly requirements.lock, whose PyTorch wheels bundle the CUDA 13
# runtime (the host needs an NVIDIA driver for CUDA 13 and the NVIDIA container toolkit).
#   docker build -f docker/gpu.Dockerfile --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t skinlesion:gpu .
#   docker run --rm --gpus all -v /path/to/ham10000:/data:ro -v "$PWD/results:/skinlesion/results" \
#       skinlesion:gpu --cores 8 --resources gpu=1 --config data_dir=/data results/report.html
# On an HPC cluster, convert it for Apptainer: apptainer build skinlesion-gpu.sif docker-daemon://skinlesion:gpu
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /skinlesion

COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock

COPY . .
RUN pip install --no-deps -e . && rm -rf results .snakemake

ARG GIT_COMMIT=unknown
ENV SKINLESION_GIT_COMMIT=${GIT_COMMIT}

ENTRYPOINT ["snakemake"]
CMD ["--profile", "profiles/sample"]
