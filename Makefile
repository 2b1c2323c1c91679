# callscope -- one build description (meson.build); this file only strings
# the steps together. `make demo` and `make test` install what they need.

PY_MAIN ?= 3.11
PY_VERSIONS ?= 3.10 3.11 3.12 3.13
VENV := .venv
ASAN_DIR := build-asan
TSAN_DIR := build-tsan

.PHONY: all demo test test-c test-asan test-tsan test-python deps venv bench clean

all: venv

# System packages the build needs (SQLite's C library, pkg-config, a C compiler).
deps:
	@./tools/ensure-deps

$(VENV)/.installed: meson.build pyproject.toml $(shell find src python -type f)
	@./tools/ensure-deps
	@test -x $(VENV)/bin/python || $$(./tools/find-python $(PY_MAIN) || echo python3) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(VENV)/bin/python -m pip install -q pytest meson ninja mpi4py numpy pyarrow pandas pyflakes pygments
	$(VENV)/bin/python -m pip install -q .
	@touch $@

venv: $(VENV)/.installed

# Run the bundled example under callscope and print its table.
demo: venv
	cd examples && CALLSCOPE_DIR=../callscope-runs ../$(VENV)/bin/callscope run demo.py
	$(VENV)/bin/callscope top --dir callscope-runs
	$(VENV)/bin/callscope report --dir callscope-runs --title "callscope demo"

# Every test: C tests (plain, AddressSanitizer+UBSan, ThreadSanitizer) and
# the Python tests on each supported Python found on this machine.
test: venv test-c test-asan test-tsan test-python

MESON := $(VENV)/bin/meson

test-c: venv
	@test -d build-c || $(MESON) setup build-c -Dpython=false >/dev/null
	$(MESON) compile -C build-c >/dev/null
	./build-c/cs_tests

test-asan: venv
	@test -d $(ASAN_DIR) || $(MESON) setup $(ASAN_DIR) -Dpython=false -Dbuildtype=debug \
	    -Db_sanitize=address,undefined -Db_lundef=false \
	    -Dc_args=-fno-sanitize-recover=all >/dev/null
	$(MESON) compile -C $(ASAN_DIR) >/dev/null
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ./$(ASAN_DIR)/cs_tests

test-tsan: venv
	@test -d $(TSAN_DIR) || $(MESON) setup $(TSAN_DIR) -Dpython=false -Dbuildtype=debug \
	    -Db_sanitize=thread -Db_lundef=false >/dev/null
	$(MESON) compile -C $(TSAN_DIR) >/dev/null
	TSAN_OPTIONS=halt_on_error=1 setarch $$(uname -m) -R ./$(TSAN_DIR)/cs_tests

test-python: venv
	@set -e; for v in $(PY_VERSIONS); do \
	    py=$$(./tools/find-python $$v) || { echo "Python $$v not found: skipped"; continue; }; \
	    env=.venv-$$v; [ "$$v" = "$(PY_MAIN)" ] && env=$(VENV); \
	    if [ ! -x $$env/bin/python ]; then $$py -m venv $$env; fi; \
	    if [ "$$env" != "$(VENV)" ]; then \
	        $$env/bin/python -m pip install -q pytest mpi4py numpy pyarrow pandas pyflakes pygments && $$env/bin/python -m pip install -q . ; fi; \
	    echo "== Python $$v"; \
	    CALLSCOPE_REQUIRE_MPI=1 CALLSCOPE_REQUIRE_BROWSER=1 $$env/bin/python -m pytest -q -p no:cacheprovider tests/python; \
	done

bench: venv
	$(VENV)/bin/python -m pip install -q yappi viztracer pygments pyflakes numpy
	@test -d build-bench || $(MESON) setup build-bench -Dbench=true >/dev/null
	$(MESON) compile -C build-bench >/dev/null
	$(VENV)/bin/python bench/run.py --floors build-bench
	./build-bench/bench_log 2000000 build-bench/log-run
	./build-bench/bench_merge 64 100000 build-bench/merge-run
	$(VENV)/bin/python bench/bench_merge.py
	$(VENV)/bin/python bench/bench_select.py
	$(VENV)/bin/python bench/bench_all.py
	$(VENV)/bin/python bench/bench_call_model.py --callgrind
	$(VENV)/bin/python bench/bench_capture.py
	$(VENV)/bin/python bench/bench_compare.py
	$(VENV)/bin/python bench/bench_report.py
	@if [ -x .venv-3.13/bin/python ]; then \
	    .venv-3.13/bin/python -m pip install -q yappi viztracer pygments . && \
	    .venv-3.13/bin/python bench/bench_all.py && .venv-3.13/bin/python bench/bench_select.py; \
	else echo "bench_all: needs .venv-3.13 (make test creates it)"; fi

clean:
	rm -rf build-c $(ASAN_DIR) $(TSAN_DIR) build-bench $(VENV) .venv-* callscope-runs
