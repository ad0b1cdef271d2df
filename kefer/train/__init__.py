"""Training and evaluation, in layers:

- ``distributed.py``: the device, torchrun / DDP, per-rank samplers;
- ``loop.py``: the training step, an epoch, inference;
- ``schedule.py``: learning-rate schedule and time budget;
- ``fit.py``: one whole run into a run directory (``fit``), checkpoint metadata, ``--init``;
- ``evaluate.py``: a recognizer's accuracy on a dataset split.
"""
