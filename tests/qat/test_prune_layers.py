"""Pruning masks (2:4 exactly), structured head / FFN removal, layer reduction, and their composition with QAT."""
import copy

import pytest
import torch

from qat_helpers import W4A4, W8A8, tiny_classifier, tiny_data
from lowbit.errors import SchemeError, ShapeError
from lowbit.qat import (TrainConfig, convert, keep_every, kept_layers, magnitude_mask, predict, prepare, prune_ffn,
                        prune_heads, prune_magnitude, train, two_four_mask)
from lowbit.qat.prune import head_importance
from lowbit.qat.qlinear import fit_group_size


def test_two_four_mask_by_hand():
    w = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, 4.0, -3.0, 0.0]])
    assert two_four_mask(w).tolist() == [[False, True, True, False, True, True, False, False]]


def test_two_four_mask_pattern_on_random_weights():
    w = torch.randn(16, 64)
    m = two_four_mask(w).reshape(16, 16, 4)
    assert (m.sum(-1) == 2).all()
    kept_min = torch.where(m, w.abs().reshape(16, 16, 4), torch.inf).amin(-1)
    dropped_max = torch.where(~m, w.abs().reshape(16, 16, 4), -torch.inf).amax(-1)
    assert (kept_min >= dropped_max).all()


def test_magnitude_mask_keeps_the_largest():
    w = torch.tensor([[1.0, -4.0], [3.0, 0.5]])
    assert magnitude_mask(w, 0.5).tolist() == [[False, True], [True, False]]
    with pytest.raises(SchemeError):
        magnitude_mask(w, 1.0)
    with pytest.raises(ShapeError, match="multiple of 4"):
        two_four_mask(torch.randn(2, 6))


def test_two_four_survives_qat_and_conversion():
    teacher, data = tiny_classifier(), tiny_data()
    student = copy.deepcopy(teacher)
    sparsity = prune_magnitude(student, pattern="2:4")
    assert len(sparsity) == 12 and all(abs(s - 0.5) < 1e-6 for s in sparsity.values())
    prepare(student, W4A4, "lsq")
    train(student, data, TrainConfig(steps=5, batch_size=16, lr=1e-2, progress=False), teacher=teacher)
    fake = predict(student, data)
    convert(student)
    q = student.bert.encoder.layer[0].intermediate.dense
    codes = q.qtensor.unpacked_codes().reshape(q.out_features, -1, 4)
    assert ((codes != 0).sum(-1) <= 2).all()  # still 2:4 in the packed codes
    assert torch.equal(predict(student, data), fake)
    with pytest.raises(SchemeError, match="unknown pruning pattern"):
        prune_magnitude(tiny_classifier(), pattern="4:8")


def test_head_pruning_shapes_map_and_group_fit():
    m = tiny_classifier(hidden=128)  # 4 heads of 32
    sa = m.bert.encoder.layer[0].attention.self
    q_before = sa.query.weight.detach().clone()
    expected = head_importance(m.bert.encoder.layer[0].attention, 4).topk(2).indices.sort().values
    head_map = prune_heads(m, 0.5)
    assert torch.equal(head_map[0], expected)
    h = int(expected[0])
    assert torch.equal(sa.query.weight[:32], q_before[h * 32:(h + 1) * 32])
    assert sa is m.bert.encoder.layer[0].attention.self
    assert sa.query.out_features == 64 and m.bert.encoder.layer[0].attention.output.dense.in_features == 64
    assert set(head_map) == {0, 1} and all(len(v) == 2 for v in head_map.values())
    out = m(input_ids=torch.randint(1, 60, (2, 6)), output_attentions=True)
    assert out.attentions[0].shape[1] == 2
    scheme, notes = fit_group_size(m, "w4a4-int")  # 64 inputs do not take g128
    assert len(notes) == 2 and "int4 g64" in notes[0]
    prepare(m, scheme)
    with pytest.raises(SchemeError):
        prune_heads(tiny_classifier(), 1.0)


def test_ffn_pruning_keeps_strongest_neurons():
    m = tiny_classifier()
    assert prune_ffn(m, 0.5) == 64
    assert m.bert.encoder.layer[1].intermediate.dense.out_features == 64
    assert m.bert.encoder.layer[1].output.dense.in_features == 64
    m(input_ids=torch.randint(1, 60, (2, 6)))


def test_layer_reduction_keeps_every_kth_from_the_teacher():
    assert kept_layers(6, 2) == [1, 3, 5] and kept_layers(6, 3) == [2, 5]
    teacher = tiny_classifier(layers=4)
    student = copy.deepcopy(teacher)
    assert keep_every(student, 2) == [1, 3]
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    assert torch.equal(student.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)
    prune_heads(student, 0.5)
    prepare(student, W8A8)
    r = train(student, tiny_data(), TrainConfig(steps=3, batch_size=16, schedule="layerwise", stage1=0.6,
                                                progress=False), teacher=teacher)
    assert r.finished and set(r.parts[0]) == {"embedding", "hidden", "attention"} and set(r.parts[-1]) == {"logits"}
    with pytest.raises(SchemeError, match="keep-every"):
        keep_every(tiny_classifier(), 3)
    assert len(student.lowbit_head_map[1]) == 1 and student.lowbit_layer_map == [1, 3]
