"""MechanismDPOptimizer: clipping norm, noise distribution and scale, seeding, empty batches,
the audit hook, and noise-once in data-parallel training (2 real gloo processes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from scipy import stats

from noise_search.mechanisms import LMO, Gaussian, Laplace
from trainers.noise import sample_noise
from trainers.optimizer import MechanismDPOptimizer, clip_factors, per_sample_norms

LMO_MECH = LMO(a1=1.0, a3=0.5, a4=0.8, G_k=3.0, G_theta=0.7, E_lambda=2.0, U_a=0.2, U_b=1.4)
MECHS = {"gaussian": Gaussian(1.3), "laplace": Laplace(0.8), "lmo": LMO_MECH}


def tiny_model(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(12, 40), torch.nn.Tanh(), torch.nn.Linear(40, 30))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def backward_on(gsm: torch.nn.Module, n: int, seed: int = 1, scale: float = 5.0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g) * scale
    y = torch.randn(n, 30, generator=g)
    ((gsm(x) - y) ** 2).sum(dim=1).mean().backward()


def dp_optimizer(model, mech, *, clip=1.0, ebs=8.0, seed=7, **kw) -> MechanismDPOptimizer:
    base = torch.optim.SGD(model.parameters(), lr=0.0)
    return MechanismDPOptimizer(
        base,
        mechanism=mech,
        max_grad_norm=clip,
        expected_batch_size=ebs,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize("name", ["gaussian", "laplace", "lmo"])
def test_clipped_contributions_have_norm_at_most_c_in_the_mechanism_norm(name):
    mech, clip = MECHS[name], 0.75
    gsm = GradSampleModule(tiny_model(), batch_first=True, loss_reduction="mean")
    opt = dp_optimizer(gsm, mech, clip=clip)
    backward_on(gsm, n=9)
    grad_samples = [g.clone() for g in opt.grad_samples]
    raw = per_sample_norms(grad_samples, mech.norm)
    assert bool((raw > clip).all()), "inputs must need clipping for this test to mean anything"
    factors = clip_factors(grad_samples, clip, mech.norm)
    # what the optimizer does: factors cast to the parameter dtype times the float32 gradients
    clipped = [factors.to(g.dtype).view(-1, *([1] * (g.dim() - 1))) * g for g in grad_samples]
    norms = per_sample_norms(clipped, mech.norm)
    assert float(norms.max()) <= clip
    assert float(norms.min()) > clip * 0.9999  # clipped to the bound (less a 1e-5 margin), not below it
    # the right norm: an L2-clipped example is far above C in L1 (d = 1,750 coordinates)
    if mech.norm == "l1":
        l2_factors = clip_factors(grad_samples, clip, "l2")
        l2_clipped = [l2_factors.to(g.dtype).view(-1, *([1] * (g.dim() - 1))) * g for g in grad_samples]
        assert float(per_sample_norms(l2_clipped, "l1").min()) > 5 * clip
    # the optimizer's accumulated sum is the sum of these clipped contributions
    opt.clip_and_accumulate()
    for p, c in zip(opt.params, clipped, strict=True):
        torch.testing.assert_close(p.summed_grad, c.sum(dim=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_clipping_bound_holds_for_16_bit_parameters(name, dtype):
    """Clipping and the clipped sum run in float32 for bf16 / fp16 parameters, so every clipped
    example stays within C; in the parameter dtype a bf16 example reached 1.003-1.004 C."""
    mech, clip = MECHS[name], 1.0
    model = tiny_model().to(dtype)
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    opt = dp_optimizer(gsm, mech, clip=clip)
    g = torch.Generator().manual_seed(3)
    n = 16
    x = (torch.randn(n, 12, generator=g) * 3).to(dtype)
    y = torch.randn(n, 30, generator=g).to(dtype)
    ((gsm(x) - y) ** 2).sum(dim=1).mean().backward()
    grad_samples = [gs.clone() for gs in opt.grad_samples]
    assert bool((per_sample_norms(grad_samples, mech.norm) > clip).all())
    # each example alone through the optimizer's own clip-and-accumulate: its contribution's norm
    worst = 0.0
    for i in range(n):
        for p, gs in zip(opt.params, grad_samples, strict=True):
            p.grad_sample = gs[i : i + 1].clone()
            p.summed_grad = None
        opt.clip_and_accumulate()
        contribution = [p.summed_grad.unsqueeze(0) for p in opt.params]
        assert all(c.dtype == torch.float32 for c in contribution)
        worst = max(worst, float(per_sample_norms(contribution, mech.norm)[0]))
    assert clip * 0.999 < worst <= clip
    # the old way (clip and sum in the parameter dtype) breaks the bound: the test can fail
    factors = clip_factors(grad_samples, clip, mech.norm)
    in_dtype = [factors.to(dtype).view(-1, *([1] * (gs.dim() - 1))) * gs for gs in grad_samples]
    assert float(per_sample_norms(in_dtype, mech.norm).max()) > clip
    # the noisy gradient is cast back to the parameter dtype after the noise is added in float32
    for p, gs in zip(opt.params, grad_samples, strict=True):
        p.grad_sample = gs
        p.summed_grad = None
    opt.clip_and_accumulate()
    opt.add_noise()
    assert all(p.grad.dtype == dtype for p in opt.params)


def test_l2_clipping_matches_opacus():
    model_a, model_b = tiny_model(), tiny_model()
    gsm_a = GradSampleModule(model_a, batch_first=True, loss_reduction="mean")
    gsm_b = GradSampleModule(model_b, batch_first=True, loss_reduction="mean")
    ours = dp_optimizer(gsm_a, Gaussian(1.0), clip=0.5)
    theirs = DPOptimizer(
        torch.optim.SGD(model_b.parameters(), lr=0.0), noise_multiplier=1.0, max_grad_norm=0.5, expected_batch_size=8
    )
    backward_on(gsm_a, n=6)
    backward_on(gsm_b, n=6)
    ours.clip_and_accumulate()
    theirs.clip_and_accumulate()
    for pa, pb in zip(ours.params, theirs.params, strict=True):
        torch.testing.assert_close(pa.summed_grad, pb.summed_grad, rtol=1e-5, atol=1e-7)


def noise_in_grad(mech, *, clip: float, ebs: float, seed: int = 11) -> np.ndarray:
    """``p.grad`` of a step whose examples all have zero gradient: ``Z / (q N)``, flattened."""
    model = torch.nn.Linear(100, 200)  # d = 20,200
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    opt = dp_optimizer(gsm, mech, clip=clip, ebs=ebs, seed=seed)
    for p in opt.params:
        p.grad_sample = torch.zeros((5, *p.shape))
    opt.pre_step()
    return torch.cat([p.grad.reshape(-1) for p in opt.params]).double().numpy()


def unit_cdf(mech):
    if isinstance(mech, Gaussian):
        return lambda z: stats.norm.cdf(z, scale=mech.sigma)
    return mech.noise_cdf


@pytest.mark.parametrize("name", ["gaussian", "laplace", "lmo"])
def test_noise_in_grad_matches_the_mechanism_distribution_and_scale(name):
    mech, clip, ebs = MECHS[name], 2.5, 7.5
    grad = noise_in_grad(mech, clip=clip, ebs=ebs)
    z = grad * ebs / clip  # undo the 1/(qN) scaling and the C scaling
    assert stats.kstest(z, unit_cdf(mech)).pvalue > 1e-3
    # the test has power: 30% off in scale, or a forgotten 1/(qN) or C, is rejected
    assert stats.kstest(z * 1.3, unit_cdf(mech)).pvalue < 1e-6
    assert stats.kstest(grad * ebs, unit_cdf(mech)).pvalue < 1e-6
    assert stats.kstest(grad / clip, unit_cdf(mech)).pvalue < 1e-6


def test_noise_comes_from_the_seeded_generator_once_per_step():
    mech = MECHS["lmo"]
    a = noise_in_grad(mech, clip=1.0, ebs=4.0, seed=5)
    b = noise_in_grad(mech, clip=1.0, ebs=4.0, seed=5)
    c = noise_in_grad(mech, clip=1.0, ebs=4.0, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # exactly one draw of sample_noise for all coordinates of the step, in parameter order
    expected = sample_noise(mech, (a.size,), 1.0, torch.Generator().manual_seed(5)).double().numpy() / 4.0
    np.testing.assert_allclose(a, expected, rtol=1e-6)


def test_empty_poisson_batch_is_a_pure_noise_step():
    gsm = GradSampleModule(tiny_model(), batch_first=True, loss_reduction="mean")
    opt = dp_optimizer(gsm, Laplace(1.0), clip=1.0, ebs=3.0)
    before = [p.detach().clone() for p in opt.params]
    opt.param_groups[0]["lr"] = 0.1
    for p in opt.params:
        p.grad_sample = torch.zeros((0, *p.shape))
    opt.step()
    assert opt.noise_steps == 1
    for p, b in zip(opt.params, before, strict=True):
        assert torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0
        torch.testing.assert_close(p.detach(), b - 0.1 * p.grad)


def test_extra_contributions_are_clipped_and_added_before_the_noise():
    mech, clip, ebs = MECHS["laplace"], 0.5, 4.0
    model = tiny_model()
    shapes = [p.shape for p in model.parameters()]
    canary = [torch.full((2, *s), 3.0) for s in shapes]  # two canaries, far above C in L1
    calls = []

    def extra(step):
        calls.append(step)
        return canary if step == 0 else None

    grads = []
    for hook in (None, extra):
        gsm = GradSampleModule(tiny_model(), batch_first=True, loss_reduction="mean")
        opt = dp_optimizer(gsm, mech, clip=clip, ebs=ebs, seed=3, extra_contributions=hook)
        for p in opt.params:
            p.grad_sample = torch.zeros((4, *p.shape))
        opt.pre_step()
        grads.append([p.grad.clone() for p in opt.params])
    assert calls == [0]
    diff = [(b - a) * ebs for a, b in zip(grads[0], grads[1], strict=True)]
    total_l1 = sum(float(d.abs().sum()) for d in diff)
    assert total_l1 == pytest.approx(2 * clip, rel=1e-4)  # two canaries, each clipped to C in L1
    with pytest.raises(ValueError, match="one per parameter"):
        gsm = GradSampleModule(tiny_model(), batch_first=True, loss_reduction="mean")
        opt = dp_optimizer(gsm, mech, extra_contributions=lambda s: canary[:1])
        for p in opt.params:
            p.grad_sample = torch.zeros((1, *p.shape))
        opt.pre_step()


def test_a_generator_is_required():
    with pytest.raises(ValueError, match="generator"):
        MechanismDPOptimizer(
            torch.optim.SGD(tiny_model().parameters(), lr=0.1),
            mechanism=Gaussian(1.0),
            max_grad_norm=1.0,
            expected_batch_size=4,
            generator=None,
        )


# --- data parallel: two real processes over gloo ------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from trainers.optimizer import make_dp_optimizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = tiny_model(seed=0)
        gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        opt = make_dp_optimizer(
            torch.optim.SGD(model.parameters(), lr=0.0),
            mechanism=MECHS["lmo"],
            max_grad_norm=0.5,
            expected_batch_size=10.0,  # total q N; each rank divides by the world size
            generator=torch.Generator().manual_seed(99),  # same seed on both ranks on purpose
            distributed=True,
        )
        backward_on(gsm, n=3 + rank, seed=100 + rank)
        # this rank's clipped sum, computed independently (on ranks > 0 Opacus's p.grad is a
        # view of p.summed_grad, so summed_grad itself is scaled in place by the step)
        gs = [g.clone() for g in opt.grad_samples]
        f = clip_factors(gs, 0.5, MECHS["lmo"].norm)
        summed = [torch.einsum("i,i...", f.to(g.dtype), g) for g in gs]
        opt.step()
        torch.save(
            {"grad": [p.grad.clone() for p in opt.params], "summed": summed, "noise_steps": opt.noise_steps},
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # gloo data parallel
def test_data_parallel_noise_is_added_once_on_rank_zero(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["noise_steps"] == 1 and r1["noise_steps"] == 0
    numels = [g.numel() for g in r0["grad"]]
    noise = sample_noise(MECHS["lmo"], (sum(numels),), 0.5, torch.Generator().manual_seed(99))
    chunks = torch.split(noise, numels)
    for g0, g1, s0, s1, z in zip(r0["grad"], r1["grad"], r0["summed"], r1["summed"], chunks, strict=True):
        torch.testing.assert_close(g0, g1)  # same update on both ranks
        expected = (s0 + s1 + z.view_as(s0)) / 10.0  # (sum of clipped + ONE noise draw) / (q N)
        torch.testing.assert_close(g0, expected, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(sum(g.abs().sum() for g in r0["grad"])))
