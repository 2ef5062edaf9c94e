"""Training: the one loop (`loop.py`), its optimiser and schedule (`optim.py`), curves (`plot.py`), and recipes
over it (`pretrain.py`; fine-tuning and distillation follow)."""
