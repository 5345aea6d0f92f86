"""LoRC, Hadamard rotation and KV-cache quantization: maths on hand-made inputs, tiny models, checkpoints."""
import pytest
import torch

from lowbit import quantize
from lowbit.errors import ModelError, SchemeError, ShapeError
from lowbit.export.native import load, save
from lowbit.methods import kvcache as KV
from lowbit.methods import lorc as L
from lowbit.methods import rotation as R
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec, get_scheme
from tiny_models import tiny_gpt2, tiny_llama

BATCHES = [torch.randint(0, 120, (2, 16)) for _ in range(2)]
IDS = torch.randint(0, 120, (2, 16))


def test_lorc_factors_are_the_best_rank_r_approximation():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(40, 3, generator=g) @ torch.randn(3, 24, generator=g)  # rank 3
    u, v = L.lorc_factors(e, 8)
    assert u.shape == (40, 8) and v.shape == (8, 24)
    torch.testing.assert_close(u @ v, e, rtol=1e-4, atol=1e-4)
    noise = torch.randn(40, 24, generator=g)
    u, v = L.lorc_factors(noise, 4)
    s = torch.linalg.svdvals(noise)
    torch.testing.assert_close((noise - u @ v).norm(), s[4:].norm(), rtol=1e-4, atol=1e-4)  # Eckart-Young


def test_int8_factor_rows_round_trip_within_half_a_step():
    t = torch.randn(6, 10)
    q, s = L.int8_rows(t)
    assert q.dtype == torch.int8 and s.shape == (6, 1)
    assert ((q.float() * s - t).abs() <= s / 2 + 1e-7).all()
    q, s = L.int8_rows(torch.zeros(2, 3))
    assert torch.all(q == 0) and torch.all(s == 1)


@pytest.mark.parametrize("bits", [8, None])
def test_lorc_lowers_the_weight_error_and_survives_a_checkpoint(tmp_path, bits):
    m = tiny_llama()
    name = "model.layers.0.mlp.down_proj"
    w = m.get_submodule(name).weight.detach().clone()
    spec = get_scheme("w4a16").weights
    scheme = get_scheme("w4a16").replace(methods=("lorc",), method_args=(("lorc", (("bits", bits),)),))
    quantize(m, scheme, None, progress=False)
    q = m.get_submodule(name)
    u, v = q.lorc_factors()
    rtn = quantize_weight(w, spec).dequantize()
    assert torch.equal(q.dequantized_weight(), rtn)
    assert (w - rtn - u @ v).norm() < 0.97 * (w - rtn).norm()  # quantization noise is nearly full rank
    assert (q.lorc_u.dtype == torch.int8) == (bits == 8)
    y = m(input_ids=IDS).logits
    save(m, tmp_path / "ck")
    m2, _ = load(tmp_path / "ck")
    assert m2.get_submodule(name).lorc_rank == 8
    torch.testing.assert_close(m2(input_ids=IDS).logits, y)


@pytest.mark.parametrize("args, match", [((("rank", 0),), "rank must be"), ((("bits", 4),), "bits must be 8")])
def test_lorc_arguments_are_checked(args, match):
    with pytest.raises(SchemeError, match=match):
        quantize(tiny_llama(), get_scheme("w4a16").replace(methods=("lorc",), method_args=(("lorc", args),)),
                 None, progress=False)


def test_lorc_must_come_after_weight_changing_methods():
    with pytest.raises(SchemeError, match="must come after gptq"):
        quantize(tiny_llama(), get_scheme("w4a16").replace(methods=("lorc", "gptq")), BATCHES, progress=False)


@pytest.mark.parametrize("n", [12, 72, 576, 1536, 128])
def test_hadamard_matrices_are_orthogonal_with_equal_magnitudes(n):
    h = R.hadamard_matrix(n)
    torch.testing.assert_close(h @ h.T, torch.eye(n, dtype=h.dtype))
    torch.testing.assert_close(h.abs() * n ** 0.5, torch.ones(n, n, dtype=h.dtype))
    x = torch.randn(3, n)
    torch.testing.assert_close(R.hadamard_transform(x), (x.double() @ h).float(), rtol=1e-5, atol=1e-5)


def test_hadamard_size_without_a_construction_is_refused():
    with pytest.raises(ShapeError, match="no Hadamard matrix of order 18"):
        R.hadamard_matrix(18)
    with pytest.raises(ValueError, match="unknown input transform"):
        R.online_transform(torch.zeros(4), "fourier")


def test_rotation_preserves_the_float_function():
    m = tiny_llama()
    with torch.no_grad():
        ref = m(input_ids=IDS).logits
        R.rotate_model(m)
        out = m(input_ids=IDS).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert m.lm_head.weight is not m.model.embed_tokens.weight  # untied by norm fusion


def test_rotation_rescues_w4a4_on_outlier_channels():
    """One layer, by hand: 3 massive input channels (as in decoders' residual streams) make per-token INT4
    zero out every other channel; after x -> x Q, W -> W Q the product is the same and quantizes well."""
    from lowbit.quant.qtensor import quantize_activation

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, generator=g)
    x[:, :3] *= 40
    w = torch.randn(32, 128, generator=g)
    spec_w, spec_a = QuantSpec("int4", "group", 32), QuantSpec("int4", "token", dynamic=True)
    q = R.random_hadamard(128).float()

    def err(xx, ww):
        y = quantize_activation(xx, spec_a) @ quantize_weight(ww, spec_w).dequantize().T
        return (y - x @ w.T).pow(2).mean()

    torch.testing.assert_close((x @ q) @ (w @ q).T, x @ w.T, rtol=1e-4, atol=1e-3)
    assert err(x @ q, w @ q) < 0.5 * err(x, w)


def test_rotated_w4a4_model_survives_a_checkpoint(tmp_path):
    m = tiny_llama()
    quantize(m, get_scheme("w4a4-int").replace(methods=("rotation",)), None, progress=False)
    assert m.model.layers[0].mlp.down_proj.input_transform == "hadamard"
    save(m, tmp_path / "ck")
    m2, _ = load(tmp_path / "ck")
    assert m2.model.layers[0].mlp.down_proj.input_transform == "hadamard"
    torch.testing.assert_close(m2(input_ids=IDS).logits, m(input_ids=IDS).logits)


def test_rotation_errors():
    with pytest.raises(ModelError, match="pre-RMSNorm decoders"):
        R.rotate_model(tiny_gpt2())
    with pytest.raises(SchemeError, match="list it first"):
        quantize(tiny_llama(), get_scheme("w4a4-int").replace(methods=("lae", "rotation")), BATCHES, progress=False)


def test_kv_quantization_per_token_and_head():
    t = torch.randn(2, 5, 4 * 8)
    t[..., 8:16] *= 100  # one loud head must not flatten the others
    q = KV.quantize_kv(t, 8, QuantSpec("int8", "token", dynamic=True))
    err = (q - t).abs().reshape(2, 5, 4, 8).amax(dim=-1)
    step = t.abs().reshape(2, 5, 4, 8).amax(dim=-1) / 127
    assert (err <= step / 2 + 1e-6).all()


def test_kvcache_method_changes_outputs_slightly_and_checks_format():
    m = tiny_llama()
    ref = m(input_ids=IDS).logits
    scheme = get_scheme("w8a8-int8").replace(methods=("kvcache",), method_args=(("kvcache", (("format", "fp8_e4m3"),)),))
    quantize(m, scheme, None, progress=False)
    assert m.lowbit_extras["kvcache"] == {"format": "fp8_e4m3", "blocks": 2}
    out = m(input_ids=IDS).logits
    assert m.model.layers[0].self_attn.k_proj._lowbit_kv_hooked
    assert 0 < (out - ref).abs().max() < 0.1 * ref.abs().max()
    with pytest.raises(SchemeError, match="kv-cache format 'int4'"):
        KV.enable_kv_quant(tiny_llama(), "int4")
    with pytest.raises(ModelError, match="needs self_attn.k_proj"):
        KV.enable_kv_quant(tiny_gpt2())
