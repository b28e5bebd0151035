"""reconad: anomaly detection in images by autoencoder reconstruction error."""

from reconad.errors import ReconadError

__version__ = "0.1.0"
__all__ = ["ReconadError", "__version__"]
