"""sid.speed: the learn step's UNet knobs give the same prediction and gradient as the eager UNet."""

from __future__ import annotations

import pytest
import torch

from sid.errors import BadInput
from sid.speed import Speedups, parse_speedups, unet_step


def test_labels_read_back():
    for text in (
        "eager",
        "eager,channels_last",
        "channels_last=false",
        "attention=flash,channels_last",
        "compile=reduce-overhead",
    ):
        speed = parse_speedups(text)
        assert parse_speedups(speed.label()) == speed
    assert parse_speedups("channels_last,attention=math") == Speedups(channels_last=True, attention="math")
    assert Speedups().label() == "default" and parse_speedups("default") == Speedups()
    assert parse_speedups("eager") == Speedups(cuda_graphs="off")
    assert Speedups(cuda_graphs="unet").label() == "cuda_graphs=unet"


def test_graphs_default_to_the_whole_prediction_on_cuda_only():
    assert Speedups().graphs("cuda") == "predict" and Speedups().graphs("cuda:1") == "predict"
    assert Speedups().graphs("cpu") == "off" and Speedups().graphs("mps") == "off"
    assert Speedups(compile="default").graphs("cuda") == "off"  # compile decides how the UNet runs
    assert Speedups(cuda_graphs="unet").graphs("cuda") == "unet"
    assert parse_speedups("eager").graphs("cuda") == "off"
    assert Speedups().nhwc("cuda") and not Speedups().nhwc("cpu")  # channels-last goes with the graphs
    assert not parse_speedups("eager").nhwc("cuda") and parse_speedups("eager,channels_last").nhwc("cuda")
    assert not parse_speedups("channels_last=false").nhwc("cuda")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("turbo", "unknown speed knob"),
        ("channels_last=yes", "takes no value"),
        ("attention=fast", "attention"),
        ("cuda_graphs=all", "cuda_graphs"),
    ],
)
def test_bad_knobs_are_refused(text, match):
    with pytest.raises(BadInput, match=match):
        parse_speedups(text).check("cpu")


def test_impossible_combinations_are_refused_before_any_work():
    Speedups().check("cpu")  # "auto" is off on the CPU, not an error
    for graphs in ("unet", "predict", "step"):
        with pytest.raises(BadInput, match="CUDA device"):
            Speedups(cuda_graphs=graphs).check("cpu")
        with pytest.raises(BadInput, match="both capture"):
            Speedups(cuda_graphs=graphs, compile="default").check("cuda")
    with pytest.raises(BadInput, match="compile mode"):
        Speedups(compile="fastest").check("cpu")


@pytest.mark.parametrize("text", ["channels_last", "attention=flash", "attention=math", "attention=classic"])
def test_cpu_knobs_match_the_eager_unet(text):
    from sid.testing import tiny_unet

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500])
    cond = torch.randn(2, 77, 32, generator=g)

    def prediction_and_grad(speed: Speedups) -> tuple[torch.Tensor, torch.Tensor]:
        unet = tiny_unet(32).requires_grad_(False).eval()
        leaf = cond.clone().requires_grad_()
        out = unet_step(unet, speed, "cpu", None)(z, t, leaf)
        out.square().mean().backward()
        return out.detach(), leaf.grad

    eager_out, eager_grad = prediction_and_grad(Speedups())
    out, grad = prediction_and_grad(parse_speedups(text))
    assert eager_grad.abs().sum() > 0  # the gradient reaches the conditioning
    torch.testing.assert_close(out, eager_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, eager_grad, rtol=1e-3, atol=1e-6)


def test_a_capture_that_fails_warns_and_runs_eagerly():
    """Here the capture fails for want of CUDA; on a GPU an operation or driver may refuse it."""
    from sid.speed import capture

    calls = []

    def double(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x * 2

    x = torch.ones(3, requires_grad=True)
    graphed = capture(double, None)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        out = graphed(x)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.full((3,), 2.0)) and torch.equal(x.grad, torch.full((3,), 2.0))
    graphed(x)  # later calls run eagerly without warning again
    assert len(calls) == 2


def test_a_whole_step_capture_that_fails_warns_and_learns_as_eagerly():
    """The learn step (mapper, loss, clipping, AdamW) through ``capture_step``: on the CPU the capture
    fails, warns once and every step runs eagerly, bit for bit the eager steps."""
    from sid.speed import capture_step
    from sid.stacking import Mappers, make_optimizer
    from sid.train import update

    def run(graphed: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        mapper = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
        group = Mappers(
            [mapper],
            [make_optimizer(mapper.parameters(), "stableidentity", 1e-2, "cpu")],
            "stableidentity",
            1e-2,
            "cpu",
            False,
        )
        scaler = torch.amp.GradScaler(enabled=False)

        def step(face: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            losses = (group.module(face) - target).square().mean(dim=1)
            update(losses.sum(), group.module, group.optimizer, scaler, 1.0)
            return losses.detach()

        fn = capture_step(step, group.state) if graphed else step
        g = torch.Generator().manual_seed(1)
        losses = [fn(torch.randn(2, 8, generator=g), torch.randn(2, 4, generator=g)) for _ in range(5)]
        return losses, group.state()

    eager_losses, eager_state = run(False)
    with pytest.warns(RuntimeWarning, match="capture of the learn step failed") as caught:
        losses, state = run(True)
    assert len([w for w in caught if "learn step" in str(w.message)]) == 1  # once, not every step
    assert all(torch.equal(a, b) for a, b in zip(losses, eager_losses, strict=True))
    assert len(state) == len(eager_state) > 4  # parameters and AdamW's moments and step counts
    assert all(torch.equal(a, b) for a, b in zip(state, eager_state, strict=True))
