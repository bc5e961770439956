import torch

from models.scan import linear_scan


def loop_scan(a, x, h0):
    h, out = h0, []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def test_matches_sequential_loop_for_odd_lengths():
    gen = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 17, 100, 513):
        a = torch.rand(2, length, 5, generator=gen)
        x = torch.randn(2, length, 5, generator=gen)
        h0 = torch.randn(2, 5, generator=gen)
        torch.testing.assert_close(linear_scan(a, x, h0), loop_scan(a, x, h0), atol=1e-5, rtol=1e-5)


def test_gradients_match_autograd_of_the_loop():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 37, 3, generator=gen, dtype=torch.float64).requires_grad_()
    x = torch.randn(2, 37, 3, generator=gen, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(linear_scan, (a, x, h0))
