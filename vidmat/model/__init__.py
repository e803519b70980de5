"""U2-Net models (:mod:`.u2net`), the weights registry (:mod:`.spec`) and the code that
reads and writes weights files (:mod:`.weights`).

Nothing is imported here: :mod:`.spec` is read by ``--help`` without torch.
"""
