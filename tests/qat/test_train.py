"""End to end on a tiny random BERT: loss falls, the packed model equals the fake-quant model, resume is exact."""
import copy

import pytest
import torch

from qat_helpers import W4A4, W8A8, tiny_classifier, tiny_data
from lowbit.errors import CheckpointError, DataError, ModelError, SchemeError
from lowbit.nn.qlinear import QuantLinear
from lowbit.qat import KDWeights, TrainConfig, convert, predict, prepare, qat_modules, train


@pytest.mark.parametrize("grad", ["lsq", "mkq"])
def test_qat_kd_loss_falls_and_converted_equals_fake_quant(grad):
    teacher, data = tiny_classifier(), tiny_data()
    student = copy.deepcopy(teacher)
    report = prepare(student, W4A4, grad)
    assert len(report.quantized) == 12 and any("classifier" in n for n, _ in report.skipped)
    before = {n: m.wq.step(m.weight).detach().clone() for n, m in qat_modules(student).items()}
    # intermediate terms only: their minimum is 0 (soft CE to a random teacher sits at its entropy, ~ln 2)
    cfg = TrainConfig(steps=20, batch_size=16, lr=1e-3, scale_lr=1e-2 if grad == "lsq" else 5e-2, progress=False,
                      kd=KDWeights(logits=0.0))
    r = train(student, data, cfg, teacher=teacher)
    # the teacher's flags are untouched, so a student deep-copied from it later trains every parameter
    assert all(p.requires_grad for p in teacher.parameters())
    first, last = sum(r.losses[:5]) / 5, sum(r.losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    moved = [not torch.equal(before[n], m.wq.step(m.weight)) for n, m in qat_modules(student).items()]
    assert all(moved)  # every learned scale trained
    fake = predict(student, data)
    convert(student)
    assert isinstance(student.bert.encoder.layer[0].attention.self.query, QuantLinear)
    assert not qat_modules(student)
    assert torch.equal(predict(student, data), fake)


def test_labels_only_training_learns_the_task():
    # without a teacher a staged schedule has no intermediate stage: labels train every step (it used to switch
    # every loss term off in the first stage and raise)
    student, data = tiny_classifier(), tiny_data(n=96)
    prepare(student, W8A8, "lsq")
    r = train(student, data, TrainConfig(steps=25, batch_size=16, lr=3e-3, schedule="two-stage", progress=False))
    assert all(set(p) == {"label"} for p in r.parts)
    assert sum(r.losses[-5:]) / 5 < 0.8 * sum(r.losses[:5]) / 5


def _run(tmp_path, stop_after=None, cfg=None):
    torch.manual_seed(123)  # the caller's RNG must not matter: train seeds it (fresh) or restores it (resume)
    teacher = tiny_classifier()
    student = tiny_classifier(dropout=0.1)  # dropout makes the RNG state part of what resume must restore
    prepare(student, W4A4, "lsq")
    cfg = cfg or TrainConfig(steps=8, batch_size=16, checkpoint_every=3, schedule="two-stage", progress=False)
    r = train(student, tiny_data(), cfg, teacher=teacher, state_path=tmp_path / "state.pt", stop_after=stop_after)
    return student, r


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    full, r_full = _run(tmp_path / "a")
    part, r_part = _run(tmp_path / "b", stop_after=5)
    assert not r_part.finished and r_part.step == 5
    resumed, r_res = _run(tmp_path / "b")
    assert r_res.resumed_from == 5 and r_res.finished
    assert r_res.losses == r_full.losses
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(tmp_path):
    _run(tmp_path, stop_after=2)
    with pytest.raises(CheckpointError, match="other settings.*lr"):
        _run(tmp_path, cfg=TrainConfig(steps=8, batch_size=16, lr=1e-4, checkpoint_every=3, schedule="two-stage",
                                       progress=False))


def test_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it"):
        _run(tmp_path)


def test_train_errors(tmp_path):
    m = tiny_classifier()
    with pytest.raises(DataError, match="fewer than one batch"):
        train(m, tiny_data(n=8), TrainConfig(batch_size=16, progress=False))
    for bad in [dict(steps=0), dict(lr=0.0), dict(schedule="cosine"), dict(warmup=1.5), dict(batch_size=2.5)]:
        with pytest.raises(SchemeError):
            TrainConfig(**bad)
    with pytest.raises(SchemeError, match="temperature"):
        KDWeights(temperature=0)
    with pytest.raises(ModelError, match="not prepared|no QATLinear"):
        convert(tiny_classifier())
    prepare(m, W4A4)
    with pytest.raises(ModelError, match="already prepared"):
        prepare(m, W4A4)
