# The pipeline for CPU hosts: the pinned environment of requirements.lock, with PyTorch's CPU wheels
# (same versions, no CUDA libraries) instead of the CUDA ones.
#   docker build -f docker/cpu.Dockerfile --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t skinlesion:cpu .
#   docker run --rm -v "$PWD/results:/skinlesion/results" skinlesion:cpu                 # the sample demo
#   docker run --rm -v /path/to/ham10000:/data:ro -v "$PWD/results:/skinlesion/results" \
#       skinlesion:cpu --cores 8 --config data_dir=/data results/report.html
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /skinlesion

COPY requirements.lock pyproject.toml ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && grep -Ev '^(nvidia-|cuda-|triton==)' requirements.lock > /tmp/requirements-cpu.txt \
 && pip install -r /tmp/requirements-cpu.txt

COPY . .
RUN pip install --no-deps -e . && rm -rf results .snakemake

# Provenance: there is no .git in the image, so the commit comes in as a build argument.
ARG GIT_COMMIT=unknown
ENV SKINLESION_GIT_COMMIT=${GIT_COMMIT}

ENTRYPOINT ["snakemake"]
CMD ["--profile", "profiles/sample"]
