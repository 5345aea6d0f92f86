"""The engine's graph (CPU reference backend, and the Triton kernels under the interpreter) against the un-fused
QuantLinear model that transformers runs, on tiny random encoders."""
import copy

import pytest
import torch
from tiny_models import TINY, tiny_bert

import lowbit
from lowbit.data.testing import word_tokenizer
from lowbit.engine import Engine
from lowbit.errors import ModelError

SCHEMES = ["w8a8-int8", "w8a8-fp8", "w4a8-int", "w4a8-fp", "w4a4-int", "w4a4-fp4"]


def _batch(vocab=TINY["vocab"], lo=4):
    ids = torch.randint(lo, vocab, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _hf_hidden(model, b):
    with torch.no_grad():
        return model(**b).last_hidden_state


def _assert_rounding(h, ref, mask):
    keep = mask.bool()
    h, ref = h[: mask.shape[0], : mask.shape[1]][keep], ref[keep]
    # fp32 everywhere; attention and GEMM sums in another order: ~1e-7 relative, an activation code may move
    # one step at an exact tie, which the tolerance covers for the few elements it touches
    assert (h - ref).abs().max() < 1e-4 * ref.abs().max()


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reference_graph_equals_unfused_model(bert, scheme):
    q = lowbit.quantize(copy.deepcopy(bert), scheme, progress=False)
    e = Engine.from_quantized(q, device="cpu")
    b = _batch()
    _assert_rounding(e.hidden_states(b)[0], _hf_hidden(q, b), b["attention_mask"])


@pytest.mark.parametrize("scheme", ["w4a4-int"])  # FP kinds: test_fused (interpreter time)
def test_kernel_graph_equals_reference_graph(interp, bert, scheme):
    q = lowbit.quantize(copy.deepcopy(bert), scheme, progress=False)
    ids = torch.randint(4, TINY["vocab"], (2, 9))  # bucket (2, 16): 32 tokens, unpacked-weight GEMMs
    b = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 9, [1] * 5 + [0] * 4])}
    h = Engine.from_quantized(q, device="cpu", backend="kernels").hidden_states(b)[0]
    _assert_rounding(h, _hf_hidden(q, b), b["attention_mask"])


def test_embed_is_hf_mean_pooling(bert):
    from lowbit.eval.embeddings import sentence_embeddings

    q = lowbit.quantize(copy.deepcopy(bert), "w4a4-int", progress=False)
    tok = word_tokenizer("bert")
    texts = ["the film was good", "a bad movie", "news of the world says one two three four", "time"] * 3
    e = Engine.from_quantized(q, tok, device="cpu", batch_buckets=(1, 2, 8))  # 12 texts: chunks of 8 and 4
    emb = e.embed(texts)
    ref = sentence_embeddings(q, tok, texts, progress=False)
    assert emb.shape == (12, TINY["hidden"])
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(12))
    assert (emb * ref).sum(1).min() > 1 - 1e-6


def test_float_engine_equals_hf(bert):
    b = _batch()
    _assert_rounding(Engine.from_float(bert, device="cpu").hidden_states(b)[0], _hf_hidden(bert, b),
                     b["attention_mask"])


def _tiny(family):
    import transformers as T
    kw = dict(vocab_size=TINY["vocab"], hidden_size=TINY["hidden"], num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=TINY["inter"], num_labels=3)
    torch.manual_seed(0)
    if family == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(pad_token_id=1, **kw)).eval()
    if family == "mpnet":
        return T.MPNetForSequenceClassification(T.MPNetConfig(pad_token_id=1, **kw)).eval()
    return T.BertForSequenceClassification(T.BertConfig(**kw)).eval()


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet"])
def test_classify_matches_hf_head(family):
    q = lowbit.quantize(_tiny(family), "w4a8-int", progress=False)
    b = _batch()
    b["input_ids"][b["attention_mask"] == 0] = q.config.pad_token_id or 0
    with torch.no_grad():
        ref = q(**b).logits
    logits = Engine.from_quantized(q, device="cpu").classify(b)
    assert logits.shape == (3, 3)
    assert (logits - ref).abs().max() < 1e-4 * ref.abs().max()


def test_checkpoint_dir(tmp_path, bert):
    q = lowbit.quantize(copy.deepcopy(bert), "w8a8-int8", progress=False)
    lowbit.save(q, tmp_path / "ckpt")
    b = _batch()
    torch.testing.assert_close(Engine(tmp_path / "ckpt", device="cpu").hidden_states(b)[0],
                               Engine.from_quantized(q, device="cpu").hidden_states(b)[0])


def test_errors(bert):
    with pytest.raises(ModelError, match="not a QuantLinear"):
        Engine.from_quantized(copy.deepcopy(bert), device="cpu")
    with pytest.raises(ModelError, match="weight-only"):
        Engine.from_quantized(lowbit.quantize(copy.deepcopy(bert), "w4a16", progress=False), device="cpu")
    from tiny_models import tiny_gpt2
    with pytest.raises(ModelError, match="not a BERT-family"):
        Engine.from_float(tiny_gpt2(), device="cpu")
    with pytest.raises(ModelError, match="no sequence-classification head"):
        Engine.from_float(bert, device="cpu").classify(_batch())
    with pytest.raises(ModelError, match="no tokenizer"):
        Engine.from_float(bert, device="cpu").embed(["text"])
    with pytest.raises(ValueError, match="backend"):
        Engine.from_float(bert, device="cpu", backend="fast")


@pytest.mark.parametrize("seq", [9, 3])  # buckets (2, 16): 32 tokens, unpacked weights; (1, 16): 16, packed
def test_w4a4_engine_codes_are_int8_held_int4(interp, bert, seq):
    """Every code-producing stage of the W4A4 kernel graph writes int4 codes as int8 (M, K) bytes -8..7 (no
    packing) with the reference's codes; each GEMM on them equals the GEMM on the same codes packed (the
    QuantLinear layout) exactly and the reference GEMM within float32 summation order."""
    from lowbit.engine import compare, fused
    from lowbit.formats import pack_nibbles

    q = lowbit.quantize(copy.deepcopy(bert), "w4a4-int", progress=False)
    kern = Engine.from_quantized(q, device="cpu", backend="kernels")
    ref = Engine.from_quantized(q, device="cpu", backend="reference")
    b = 2 if seq == 9 else 1
    ids, mask = torch.randint(4, TINY["vocab"], (b, seq)), torch.ones(b, seq, dtype=torch.long)
    mask[-1, 2:] = 0
    x = compare.prepare(kern, ids, mask)
    att = kern._mask(x.mask, *x.ids.shape, x.padded)
    h, a, sa = compare.layer_states(ref, x)[0]
    taps, taps_r = {}, {}
    ref._layer_forward(0, h, a, sa, att, *x.ids.shape, tap=lambda n, v: taps_r.setdefault(n, v))
    kern._layer_forward(0, h, a, sa, att, *x.ids.shape, tap=lambda n, v: taps.setdefault(n, v))
    L = kern.layers[0]
    for stage, nxt in [("o_in", L.o), ("ln1", L.fc1), ("fc2_in", L.fc2), ("ln2", kern.layers[1].qkv)]:
        c, s = taps[stage][-2:]
        assert c.dtype == torch.int8 and c.shape == (x.ids.numel(), nxt.wt.k), stage
        assert int(c.min()) >= -8 and int(c.max()) <= 7, stage
        cr = taps_r[stage][-2]
        assert (c != cr).float().mean() < 0.01, stage  # fp32: a code may move at an exact rounding tie
        y = fused.gemm(c, s, nxt.wt, torch.float32)
        assert torch.equal(y, fused.gemm(pack_nibbles(c), s, nxt.wt, torch.float32)), stage
        yr = fused.gemm_ref(c, s, "int4", nxt.qt, nxt.bias, torch.float32)
        assert ((y - yr).abs() / (yr.abs().amax(1, keepdim=True) + 1)).max() < 1e-5, stage


def test_w4a4_channel_option(interp, bert):
    """The per-channel W4A4 preset: reference graph == un-fused model, kernel graph == both (as the others)."""
    q = lowbit.quantize(copy.deepcopy(bert), "w4a4-int-channel", progress=False)
    assert {m.weight_spec.granularity for m in q.modules() if hasattr(m, "weight_spec")} == {"channel"}
    b = _batch()
    _assert_rounding(Engine.from_quantized(q, device="cpu").hidden_states(b)[0], _hf_hidden(q, b),
                     b["attention_mask"])
    ids = torch.randint(4, TINY["vocab"], (2, 9))
    b = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 9, [1] * 5 + [0] * 4])}
    h = Engine.from_quantized(q, device="cpu", backend="kernels").hidden_states(b)[0]
    _assert_rounding(h, _hf_hidden(q, b), b["attention_mask"])
