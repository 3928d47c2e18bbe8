"""Llama/Yi-family decoder in Flax Linen (`transformer.py`, `attention.py`, `layers.py`, Pallas
splash attention in `splash.py`), its hyper-parameters (`architecture.py`) and the named model
sizes (`sizes.py`)."""
