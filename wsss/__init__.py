"""wsss: the shared layer of the WSSS codebase (data, backbones, CAMs, CRF, metrics, engine, DeepLab)."""

__version__ = "0.1.0"
