"""Training code for the demo model (needs the ``train`` extra: PyTorch on the CPU).

- :mod:`.dataset`: simulator frames through the inference-time NumPy backend.
- :mod:`.network`: the compact segmentation network.
- :mod:`.demo`: train, evaluate, export, write the model card (``hsi-edge train-demo``).
"""
