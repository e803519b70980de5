"""U2-Net models and the weights registry."""

from vidmat.model.u2net import ARCHITECTURES, RSU, U2Net, build_model, count_parameters

__all__ = ["ARCHITECTURES", "RSU", "U2Net", "build_model", "count_parameters"]
