# The README's two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-packages lint format install clean soak fuzz http-load cluster-scale samples-link teach-minute field-day wheels arm64-check clean-install-check jetson-check dist constraints schemas

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[edge,train,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/smartbin demo --out demo-output

# Offline wheels for the real-systemd test, which installs smartbin[edge] (plus onnxruntime and
# gpiozero) into a container with systemd/install.sh --find-links, as on a bin with no internet; bottleneck
# for tests/system/test_pi_venv.py (a numpy-2 build of a module Debian compiles for numpy 1.24).
WHEELS := .cache/wheels
$(WHEELS)/.done: setup.py Makefile constraints/x86_64.txt | $(STAMP)
	$(BIN)/pip download --quiet --dest $(WHEELS) -c constraints/x86_64.txt ".[edge,onnx]" setuptools wheel gpiozero bottleneck
	touch $@

wheels: $(WHEELS)/.done

# The versions a device installs, pinned (needs the network): constraints/<machine>.txt
constraints:
	PIP=$(BIN)/pip bash constraints/refresh.sh

# The package as one file for a device: dist/smartbin-<version>-py3-none-any.whl (docs/deployment.md).
dist: $(STAMP)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

# The MQTT payloads' JSON Schemas (edge/schemas/), generated from edge/wire/payloads.py by edge/wire/schemas.py
schemas: $(STAMP)
	$(BIN)/python -m edge.wire.schemas

# The Debian packages the tests use (tests/system-packages.sh says which, and installs them when it may).
system-packages:
	@bash tests/system-packages.sh

test: system-packages $(STAMP) $(WHEELS)/.done
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 3 --dist loadfile  # 3 workers: measured best on 2 cores (docs/testing.md)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) demo-output test-artifacts .cache

# A small real bundle (64 px, 4 classes) for the soak and fuzz runs, trained once and kept.
SMALL_BUNDLE := soak-output/bundle
$(SMALL_BUNDLE)/manifest.json: $(STAMP)
	$(BIN)/smartbin dataset synth --out soak-output/data --classes 4 --per-class 24 --size 80
	$(BIN)/python -c "from convert.training.model import write_stand_in_weights as w; w('soak-output/w.weights.h5', 64)"
	$(BIN)/smartbin train --data soak-output/data --out soak-output/run --weights soak-output/w.weights.h5 \
		--img-size 64 --epochs 20 --val-fraction 0.25
	$(BIN)/smartbin convert soak-output/run --out $(SMALL_BUNDLE) --variants int8

# Not in CI: runs the daemon for SOAK_MINUTES and reports RSS, open files and outbox size over time.
SOAK_MINUTES ?= 10
SOAK_EVERY ?= 10
soak: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/python tests/scenarios/soak.py --bundle $(SMALL_BUNDLE) --minutes $(SOAK_MINUTES) --every $(SOAK_EVERY)

# FUZZ_PAYLOADS hostile payloads to a running daemon over a real broker (CI runs a bounded 600), then as many
# hostile requests to the review station, the status page and `samples fetch` each.
FUZZ_PAYLOADS ?= 10000
fuzz: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/python tests/scenarios/fuzz.py --bundle $(SMALL_BUNDLE) --payloads $(FUZZ_PAYLOADS)
	$(BIN)/python tests/scenarios/fuzz_http.py --bundle $(SMALL_BUNDLE) --requests $(FUZZ_PAYLOADS)

# A connection flood and a slow client against the status page, the review station and the archive server:
# the figures side by side (tests/scenarios/http_load.py).
HTTP_FLOOD ?= 128
HTTP_SERVERS ?= page,review,archive
http-load: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/python tests/scenarios/http_load.py --bundle $(SMALL_BUNDLE) --flood $(HTTP_FLOOD) --servers $(HTTP_SERVERS)

# A city's fleet on a three-node RabbitMQ cluster, a node killed mid-run: decisions lost, latency, the time the
# reconnect storm takes to settle (tests/scenarios/cluster_scale.py). Needs Debian's rabbitmq-server.
SCALE_BINS ?= 1000
SCALE_SECONDS ?= 60
cluster-scale:
	$(BIN)/python tests/scenarios/cluster_scale.py --bins $(SCALE_BINS) --seconds $(SCALE_SECONDS)

# Samples over MQTT (samples.over_mqtt) on a bin's narrow uplink: decisions' latency with and without them,
# side by side (tests/scenarios/samples_link.py).
LINK_KBIT ?= 1000
LINK_SECONDS ?= 60
samples-link: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/python tests/scenarios/samples_link.py --bundle $(SMALL_BUNDLE) --kbit $(LINK_KBIT) --seconds $(LINK_SECONDS)

# Teaching the bins a new item (tests/scenarios/teach_minute.py): a 224 px ResNet50 in two parts trained on
# 3,000 patches of scikit-image's photographs (made once in teach-output/, ~15 min on 2 cores), a new item
# (another photograph) taught from 20 answers: the times, bytes and recall side by side, against the same item
# taught by a full fine-tune (train again with the run's recipe and an epoch of the last stage, ~5 min).
TEACH := teach-output
$(TEACH)/bundle/manifest.json: $(STAMP)
	$(BIN)/python -c "import sys; sys.path.insert(0, '.'); from tests.support.realimages import write_photo_patches as w; \
		w(__import__('pathlib').Path('$(TEACH)/data'), 300, 256); w(__import__('pathlib').Path('$(TEACH)/holdout'), 30, 256, seed=1); \
		w(__import__('pathlib').Path('$(TEACH)/new'), 40, 256, seed=2, folders={'coins': 'coins'})"
	$(BIN)/python -c "from convert.training.model import write_stand_in_weights as w; w('$(TEACH)/w.weights.h5', 224)"
	$(BIN)/smartbin train --data $(TEACH)/data --out $(TEACH)/run --weights $(TEACH)/w.weights.h5 --img-size 224 \
		--epochs 3 --val-fraction 0.1 --feature-cache $(TEACH)/features --feature-passes 1
	$(BIN)/smartbin convert $(TEACH)/run --out $(TEACH)/bundle --variants float32,int8 --split-head --no-probes
teach-minute: $(TEACH)/bundle/manifest.json
	$(BIN)/python tests/scenarios/teach_minute.py --bundle $(TEACH)/bundle --run $(TEACH)/run --data $(TEACH)/data \
		--holdout $(TEACH)/holdout --new $(TEACH)/new

# A bin's first month compressed (broker outage, actuator restart, a light, a bag, the camera lost, SIGKILL):
# the real daemon and actuator against mosquitto and an ffmpeg camera. CI runs it at FIELD_SCALE 0.5.
FIELD_SCALE ?= 1
field-day: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/python tests/scenarios/field_day.py --bundle $(SMALL_BUNDLE) --scale $(FIELD_SCALE)

# The README's "Flash and run it on a bin" lines, as written, in a booted debootstrapped Debian root (cached in
# .cache/clean-root) with pip offline from $(WHEELS). Root; see tests/clean_install_check.sh.
clean-install-check: $(SMALL_BUNDLE)/manifest.json $(WHEELS)/.done
	bash tests/clean_install_check.sh $(SMALL_BUNDLE) $(WHEELS)

# Not in CI (minutes under emulation): smartbin[edge] installed and run on aarch64 code (qemu-user,
# a debootstrapped Debian arm64 root cached in .cache/arm64-root), a bundle in two parts too. Root; see
# tests/arm64_check.sh.
SPLIT_BUNDLE := soak-output/bundle-split
$(SPLIT_BUNDLE)/manifest.json: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/smartbin convert soak-output/run --out $(SPLIT_BUNDLE) --variants float32,int8 --split-head
arm64-check: $(SMALL_BUNDLE)/manifest.json $(SPLIT_BUNDLE)/manifest.json
	bash tests/arm64_check.sh $(SMALL_BUNDLE) "$$($(BIN)/python -c 'import matplotlib.cbook as c; print(c.get_sample_data("grace_hopper.jpg", asfileobj=False))')" $(BIN)/python $(SPLIT_BUNDLE)

# Not in CI (installs from pip's index): constraints/jetson.txt in a Python 3.10 venv as JetPack 6 has it
# (numpy 1.x, OpenCV from outside smartbin), predicting as this venv does with LiteRT and ONNX Runtime.
JETSON_BUNDLE := soak-output/bundle-onnx
PYTHON310 ?= python3.10
$(JETSON_BUNDLE)/manifest.json: $(SMALL_BUNDLE)/manifest.json
	$(BIN)/smartbin convert soak-output/run --out $(JETSON_BUNDLE) --variants int8 --onnx --onnx-target arm64

jetson-check: $(JETSON_BUNDLE)/manifest.json
	bash tests/jetson_check.sh $(JETSON_BUNDLE) "$$($(BIN)/python -c 'import matplotlib.cbook as c; print(c.get_sample_data("grace_hopper.jpg", asfileobj=False))')" $(BIN)/python $(PYTHON310)
