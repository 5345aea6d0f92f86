"""Quantization-aware training: learned-scale fake quantizers (LSQ, the MKQ slot, min-max STE) over the same
formats and specs as PTQ, distillation losses and schedules, a resumable training loop, pruning (unstructured,
2:4, heads, FFN rows) and layer reduction. A trained model converts to packed QuantLinear layers.

Example:
    >>> from lowbit.qat import prepare, train, convert, TrainConfig, LabelledData
    >>> prepare(student, "w4a4-int", grad="lsq")
    >>> train(student, data, TrainConfig(steps=300), teacher=teacher)
    >>> convert(student)          # nn.Linear -> QuantLinear with the learned scales
"""
from lowbit.qat.distill import SCHEDULES, KDWeights, distill_loss, soft_cross_entropy
from lowbit.qat.layers import keep_every, kept_layers
from lowbit.qat.prune import (magnitude_mask, prune_ffn, prune_heads, prune_magnitude, two_four_mask)
from lowbit.qat.qlinear import QATLinear, convert, prepare, qat_modules
from lowbit.qat.quantizers import GRADIENTS, ActQuantizer, WeightQuantizer, fake_quant_ste, local_scale_grad
from lowbit.qat.train import LabelledData, TrainConfig, TrainResult, accuracy, predict, train

__all__ = [
    "GRADIENTS", "SCHEDULES", "ActQuantizer", "KDWeights", "LabelledData", "QATLinear", "TrainConfig",
    "TrainResult", "WeightQuantizer", "accuracy", "convert", "distill_loss", "fake_quant_ste", "keep_every",
    "kept_layers", "local_scale_grad", "magnitude_mask", "predict", "prepare", "prune_ffn", "prune_heads",
    "prune_magnitude", "qat_modules", "soft_cross_entropy", "train", "two_four_mask",
]
