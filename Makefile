# The two commands of the README: `make studio` and `make test`.
# Both create .venv and install requirements.txt on first use (and when it changes).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: studio test browser-deps s3-deps clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

studio: $(STAMP)
	$(PY) run_studio.py $(ARGS)

# Headless Chromium and a CJK font for the browser tests (Debian packages; needs root).
browser-deps:
	@command -v chromium >/dev/null && fc-list | grep -qi wqy || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null)

# Ceph's RADOS Gateway, the S3 server the object-store tests start (tests/start-rgw.sh).
s3-deps:
	@command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq radosgw ceph-mon ceph-osd >/dev/null)

# Three test files at a time (pytest-xdist, a file stays on one worker so its servers and
# browser are started once); `make test XDIST=` runs one file after another (docs/testing.md).
XDIST ?= -n 3 --dist loadfile
test: $(STAMP) browser-deps s3-deps
	GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 $(PY) -m pytest $(XDIST) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
