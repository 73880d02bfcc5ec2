# Two commands on a fresh machine:
#   make demo   installs everything into .venv and runs the synthetic demo
#   make test   installs everything into .venv (plus Xvfb) and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ratrig-installed
DURATION ?= 60
SYSTEM_PACKAGES := xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-xkb1 libxkbcommon-x11-0 \
	libx11-xcb1 libgl1 libegl1 libgl1-mesa-dri libdbus-1-3 libfontconfig1 libglib2.0-0
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test system-deps bench doctor clean

install: $(STAMP)

# One resolver run for everything (a second pip command would upgrade numpy and break dlclive);
# deeplabcut-live and aniposelib without their declared deps, so exactly one OpenCV is installed.
$(STAMP): pyproject.toml requirements/constraints.txt requirements/no-deps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -c requirements/constraints.txt -r requirements/no-deps.txt
	$(PY) -m ratrig.doctor
	touch $(STAMP)

system-deps:
	@if command -v xvfb-run >/dev/null 2>&1 && ldconfig -p | grep -q libxcb-cursor; then \
		echo "system packages present"; \
	elif [ "$$(id -u)" = "0" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); \
	else \
		echo "please run: sudo apt-get install $(SYSTEM_PACKAGES)"; exit 1; \
	fi

demo: install
	$(PY) -m ratrig demo --duration $(DURATION) --json demo-summary.json

test: install system-deps
	xvfb-run -a -s "-screen 0 1920x1080x24" $(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

doctor: install
	$(PY) -m ratrig.doctor

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache
