"""Distillation losses by hand, and the schedules."""
import math
from types import SimpleNamespace

import pytest
import torch

from lowbit.errors import SchemeError
from lowbit.qat.distill import KDWeights, distill_loss, masked_mse, soft_cross_entropy, stage_weights


def test_soft_cross_entropy_by_hand():
    s, t = torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]])
    # teacher (1/2, 1/2), student (3/4, 1/4): -(0.5 log 0.75 + 0.5 log 0.25)
    assert soft_cross_entropy(s, t).item() == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)))
    # T = 2 divides the logits and multiplies by T^2 = 4: student (sqrt3, 1)/(sqrt3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    assert soft_cross_entropy(s, t, 2.0).item() == pytest.approx(-4 * (0.5 * math.log(p) + 0.5 * math.log(1 - p)))


def test_masked_mse_ignores_padding():
    a, b = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert masked_mse(a, b, torch.tensor([[1, 1, 0]])).item() == pytest.approx(5.0)


def test_schedules():
    w = KDWeights()
    assert stage_weights(w, "joint", 5, 10, 4) == (w, None)
    early, _ = stage_weights(w, "two-stage", 4, 10, 4)
    late, _ = stage_weights(w, "two-stage", 5, 10, 4)
    assert early.logits == 0 and early.hidden == 1 and late.hidden == 0 and late.logits == 1
    assert [stage_weights(w, "layerwise", s, 16, 4)[1] for s in range(8)] == [1, 1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(SchemeError):
        stage_weights(w, "cosine", 0, 10, 4)


def test_distill_loss_terms_and_errors():
    h = [torch.zeros(1, 2, 4), torch.ones(1, 2, 4)]
    att = [torch.full((1, 2, 2, 2), 0.5)]
    s = SimpleNamespace(logits=torch.zeros(1, 2), hidden_states=h, attentions=att)
    t = SimpleNamespace(logits=torch.zeros(1, 2), hidden_states=[torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)],
                        attentions=[torch.tensor([[[[1.0, 0.0]] * 2, [[0.5, 0.5]] * 2, [[0, 1.0]] * 2, [[0, 0]] * 2]]).reshape(1, 4, 2, 2)])
    heads = {0: torch.tensor([1, 3])}  # student heads = teacher heads 1 and 3
    total, parts = distill_loss(s, t, KDWeights(), None, None, [0], heads)
    assert parts["hidden"] == pytest.approx(1.0) and parts["embedding"] == 0.0
    assert parts["attention"] == pytest.approx((0 + 0.25) / 2)  # head 1 matches, head 3 differs by 0.5
    assert parts["logits"] == pytest.approx(math.log(2))
    with pytest.raises(SchemeError, match="every loss term is off"):
        distill_loss(s, None, KDWeights(label=0.0), torch.tensor([0]), None, [0], {})


def test_reduced_student_distils_from_every_kth_teacher_block():
    """keep_every(·, 2) on 4 blocks gives map [1, 3]: student block j's output (hidden_states[j + 1]) and attention
    (attentions[j]) are compared with teacher block map[j]'s (hidden_states[map[j] + 1], attentions[map[j]]), as in
    TinyBERT / TernaryBERT's g(m) = k·m; the embedding output (index 0) with the teacher's."""
    t_hid = [torch.full((1, 2, 4), float(i)) for i in range(5)]  # embeddings, then blocks 0..3
    t_att = [torch.full((1, 2, 2, 2), 0.1 * (i + 1)) for i in range(4)]
    t = SimpleNamespace(logits=torch.zeros(1, 2), hidden_states=t_hid, attentions=t_att)
    s = SimpleNamespace(logits=torch.zeros(1, 2), hidden_states=[t_hid[0], t_hid[2], t_hid[4]],
                        attentions=[t_att[1], t_att[3]])
    w = KDWeights(logits=0.0)
    _, parts = distill_loss(s, t, w, None, None, [1, 3], {})
    assert parts == {"embedding": 0.0, "hidden": 0.0, "attention": 0.0}
    _, parts = distill_loss(s, t, w, None, None, [0, 1], {})  # the first blocks instead: both terms see it
    assert parts["hidden"] == pytest.approx(1.0 + 4.0) and parts["attention"] == pytest.approx(0.01 + 0.04)
