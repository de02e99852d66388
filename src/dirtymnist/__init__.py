"""dirtymnist: find which of the 26 letters a-z appear in noisy 256x256 images."""

__version__ = "0.1.0"
