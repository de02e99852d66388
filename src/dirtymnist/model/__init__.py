"""The model: backbones and heads, starting weights, preprocessing, precision, checkpoints."""
