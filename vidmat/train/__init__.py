"""Training data, augmentation, training loop and evaluation metrics.

Nothing heavy is imported here: the command line reads :data:`AMP_MODES` for its
``--help`` without loading torch.
"""

#: The forward pass's precisions in training (:func:`vidmat.train.loop.autocast`):
#: auto = bf16 on CUDA, fp32 on the CPU.
AMP_MODES = ("auto", "bf16", "off")
