"""VQGAN+CLIP engine: models by name, the optimiser, and run folders."""
__version__ = "0.1.0"
