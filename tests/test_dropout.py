"""The hashed dropout of rnnkit.kernels.dropout: the C mask against its torch twin, the
scaling and gradient of inverted dropout, seeding, and the errors."""

import pytest
import torch

from rnnkit.kernels import compiled
from rnnkit.kernels import dropout as hashed

needs_c = pytest.mark.skipif(compiled.library() is None, reason="no C compiler")
# Three blocks of the C loop and a ragged end: the threads share the blocks out.
COUNT = 3 * 65536 + 17


def expected(x, p, seed):
    keep = hashed.reference_keep(x.numel(), seed, p).view(x.shape)
    return torch.where(keep, x * (1 / (1 - p)), torch.zeros((), dtype=x.dtype))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_c_mask_equals_the_torch_twin_bit_for_bit(dtype, p):
    x = torch.randn(COUNT, dtype=torch.float32).to(dtype)
    for seed in (0, 12345, 2**63 - 2):
        assert torch.equal(hashed.apply_mask(x, p, seed), expected(x, p, seed))


@needs_c
def test_mask_does_not_depend_on_the_thread_count():
    x = torch.randn(COUNT)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hashed.apply_mask(x, 0.3, 77)
        torch.set_num_threads(2)
        two = hashed.apply_mask(x, 0.3, 77)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_twin_runs_where_the_c_library_cannot_be_built(monkeypatch):
    x = torch.randn(6, 7)
    monkeypatch.setattr(compiled, "library", lambda: None)
    assert torch.equal(hashed.apply_mask(x, 0.4, 9), expected(x, 0.4, 9))
    # float64 has no C entry point: the twin again
    x64 = x.double()
    assert torch.equal(hashed.apply_mask(x64, 0.4, 9), expected(x64, 0.4, 9))


def test_twin_multiplies_without_overflow_like_32_bit_unsigned_arithmetic():
    h = torch.tensor([0, 1, 2**31, 2**32 - 1, 0x12345678], dtype=torch.int64)
    constant = 0xC2B2AE35
    assert hashed._multiply_low_32(h, constant).tolist() == [
        (v * constant) % 2**32 for v in h.tolist()
    ]


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_about_one_minus_p_and_scales_what_it_keeps(p):
    x = torch.rand(COUNT) + 1.0  # never zero, so a zero out means dropped
    torch.manual_seed(4)
    out = hashed.dropout(x, p)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 3 standard deviations
    assert torch.allclose(out[kept], x[kept] / (1 - p))


def test_two_seeds_draw_unrelated_masks():
    a = hashed.reference_keep(COUNT, 1, 0.5)
    b = hashed.reference_keep(COUNT, 2, 0.5)
    neighbours = hashed.reference_keep(COUNT + 1, 1, 0.5)[1:]  # the first, shifted by one
    for other in (b, neighbours):
        agree = (a == other).float().mean().item()
        assert abs(agree - 0.5) < 0.005


def test_gradient_is_the_same_mask_scaled():
    x = torch.randn(40, 50, requires_grad=True)
    weights = torch.randn(40, 50)
    torch.manual_seed(0)
    out = hashed.dropout(x, 0.25)
    (out * weights).sum().backward()
    kept = (out != 0).float()
    assert torch.allclose(x.grad, kept * weights / 0.75)
    assert 0 < kept.mean() < 1


def test_gradcheck_in_float64():
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: hashed.HashedDropout.apply(x, 0.3, 11), (x,))


def test_torch_manual_seed_repeats_the_mask_and_each_call_draws_a_new_one():
    x = torch.randn(30, 40)
    torch.manual_seed(3)
    first, second = hashed.dropout(x, 0.5), hashed.dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(hashed.dropout(x, 0.5), first)
    assert not torch.equal(first, second)


def test_module_is_identity_in_eval_and_at_p_zero():
    x = torch.randn(8, 9)
    module = hashed.Dropout(0.5).eval()
    assert module(x) is x
    assert hashed.Dropout(0.0).train()(x) is x
    assert "p=0.5" in repr(module)


def test_non_contiguous_input_is_masked_by_its_logical_order():
    x = torch.randn(9, 8).t()
    torch.manual_seed(5)
    a = hashed.dropout(x, 0.5)
    torch.manual_seed(5)
    b = hashed.dropout(x.contiguous(), 0.5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_probability_outside_zero_to_one_is_refused(p):
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        hashed.Dropout(p)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        hashed.dropout(torch.ones(2), p)
