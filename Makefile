# Two commands on a fresh clone: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.facesift-installed
WORK   ?= work

.PHONY: demo test test-all setup browser clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	# facenet-pytorch (MTCNN weights inside the wheel) pins an old torch in its metadata: no deps.
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

# Headless Chromium for the report test (Debian package); skipped quietly where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium not installed: the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q

test-all: $(STAMP) browser
	$(PY) -m pytest -q -m "slow or not slow"

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" WORK=$(WORK) bash tools/demo.sh

clean:
	rm -rf $(WORK) test-artifacts .pytest_cache
