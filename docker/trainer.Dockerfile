# Rudder trainer image: DistDGL trainers and graph servers with the Rudder hook, for real
# clusters (`rudder train --ip-config hosts.txt ...`) and for single-host runs.
#
#   docker build -f docker/trainer.Dockerfile -t rudder-trainer .        (from the repo root)
#   docker build -f docker/trainer.Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t rudder-trainer:cpu .
#
# The default installs torch 2.2.1 from PyPI with its CUDA 12.1 wheels (~2.7 GB; trainers can
# use one GPU each with --device cuda). TORCH_INDEX picks a CPU-only build instead (~0.2 GB).
# Versions come from constraints.txt, the same pins `make` installs.
FROM python:3.11-slim

ARG TORCH_INDEX=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ssh: `rudder train --cluster ssh` starts the other machines' processes over ssh.
# Debian's point releases replace package versions, so pinning them would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid: the agent image uses the same one, so the two share the ipc socket's volume.
RUN useradd --create-home --uid 10001 --shell /bin/bash rudder \
    && mkdir -p /data /run/rudder \
    && chown rudder:rudder /data /run/rudder

WORKDIR /opt/rudder

# Dependencies first, in their own layer: it is rebuilt only when the pins change.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && if [ -n "$TORCH_INDEX" ]; then \
         pip install --no-cache-dir --index-url "$TORCH_INDEX" "$(grep '^torch==' constraints.txt)"; \
       fi \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt

COPY README.md ./
COPY rudder rudder
COPY controller controller
COPY trainer_hooks trainer_hooks
COPY graphs graphs
COPY launcher launcher
COPY llm llm
COPY prompts prompts
COPY evaluation evaluation
COPY examples examples
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && rudder --version

USER 10001:10001
WORKDIR /data
ENTRYPOINT ["rudder"]
CMD ["--help"]
