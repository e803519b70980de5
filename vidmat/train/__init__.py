"""Training data, augmentation, training loop and evaluation metrics."""
