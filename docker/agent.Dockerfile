# Rudder agent sidecar: the LangGraph decision agent next to the trainers. It answers the
# trainers' replace/skip requests over ZeroMQ (an ipc socket in /run/rudder, a volume shared
# with the trainer containers) and asks an Ollama server (the `ollama` service of
# docker/compose.yaml, or `rudder llm serve`) for each decision.
#
#   docker build -f docker/agent.Dockerfile -t rudder-agent .            (from the repo root)
#
# The agent never imports torch or dgl, but the project depends on them, so torch comes from
# the CPU-only index here (~0.2 GB instead of ~2.7 GB of CUDA wheels).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUDDER_MODELS_DIR=/models \
    RUDDER_LLM_URL=http://ollama:11434 \
    RUDDER_LLM_MODEL=qwen2.5-coder-0.5b

# The same uid as the trainer image: both sides of the ipc socket can use it.
RUN useradd --create-home --uid 10001 --shell /bin/bash rudder \
    && mkdir -p /run/rudder /models \
    && chown rudder:rudder /run/rudder /models

WORKDIR /opt/rudder

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
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && rudder --version

USER 10001:10001
VOLUME ["/run/rudder"]
ENTRYPOINT ["rudder"]
# The LangGraph agent over ZeroMQ (docs/agent.md); trainers reach it through the socket in the
# /run/rudder volume. The LLM URL and model can also come from RUDDER_LLM_URL / RUDDER_LLM_MODEL.
CMD ["agent", "serve", "--bind", "ipc:///run/rudder/agent.sock", "--decider", "llm", "--llm-url", "http://ollama:11434"]
