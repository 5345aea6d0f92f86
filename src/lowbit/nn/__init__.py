from lowbit.nn.qlinear import QuantLinear

__all__ = ["QuantLinear"]
