"""The fit's quantization side: rounding sensitivities, and the step allocation they drive."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_image
from dipcodec.encoder import _Coder, _weights_of
from dipcodec.fit import DEFAULT_BETA2, CanvasMSE, FitSchedule, fit, image_mse, objective, rounding_sensitivities
from dipcodec.layout import choose_network
from dipcodec.network import Generator, fixed_input, reference_weights
from dipcodec.quantize import step_codes_for, step_from_code, step_scales

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def fitted():
    """A network fitted briefly to a 64x64 image, with what it was fitted to."""
    image = make_image(64, 64)
    # About 1000 weights, coarsely quantized. The ReLU network: on it rounding errors add up the way
    # the sensitivities model (a sine network's gain from them is nil at the encoder's 8 bits per
    # weight, and unreliable at steps this coarse).
    config = choose_network(64, 64, 3, 2.0 * 64 * 64, purpose="restore")
    reference = reference_weights(config, 0)
    net = Generator(config).load(reference)
    noise = fixed_input(config, 0, 64, 64)
    target = (torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255).unsqueeze(0)
    fit(net, noise, target, FitSchedule(iterations=150, qat_iterations=0))
    return config, reference, net, noise, target


def _mse(net, noise, target, weights=None) -> float:
    with torch.no_grad():
        tensors = None if weights is None else [torch.from_numpy(w) for w in weights]
        return image_mse(net(noise, tensors), target).item()


def test_sensitivity_predicts_the_error_of_rounding_one_tensor(fitted):
    config, reference, net, noise, target = fitted
    weights = _weights_of(net)
    codes = step_codes_for(step_scales(weights, reference), 3.0)
    sens = rounding_sensitivities(net, noise, target, reference, codes)
    assert len(sens) == len(weights) and all(s > 0 for s in sens)
    base = _mse(net, noise, target)
    # The largest tensor: its rounding error is an average over many weights, so the measure is stable.
    i = max(range(len(weights)), key=lambda k: weights[k].size)
    step = float(step_from_code(codes[i]))
    rounded = list(weights)
    rounded[i] = reference[i] + np.round((weights[i] - reference[i]) / step) * step
    measured = _mse(net, noise, target, rounded) - base
    assert measured == pytest.approx(sens[i] * weights[i].size * step**2, rel=1e-3)
    # Halving the step cuts the added error by about four.
    rounded[i] = reference[i] + np.round((weights[i] - reference[i]) / (step / 2)) * (step / 2)
    finer = _mse(net, noise, target, rounded) - base
    assert 2 < measured / finer < 8


def test_sensitive_steps_cost_less_error_at_the_same_rate(fitted):
    config, reference, net, noise, target = fitted
    weights = _weights_of(net)
    header = dict(width=64, height=64, channels=3, seed=0, network=config)
    plain = step_scales(weights, reference)
    sens = rounding_sensitivities(net, noise, target, reference, step_codes_for(plain, 4.0))
    budget = int(1.0 * 64 * 64 / 8)
    errors = {}
    for name, scales in (("plain", plain), ("sensitive", step_scales(weights, reference, sens))):
        coder = _Coder(weights, reference, header, scales)
        data, codes = coder.largest_under(budget)
        assert len(data) <= budget
        errors[name] = _mse(net, noise, target, coder.dequantized(codes))
    assert errors["sensitive"] < errors["plain"], errors


def _at(bpp: float):
    """The encoder's network for a 768x512 RGB image at ``bpp``."""
    return choose_network(512, 768, 3, bpp * 512 * 768)


def _counts(schedule: FitSchedule) -> list[int]:
    """The float iterations a schedule stretches to at 0.25, 0.5 and 0.75 bpp on 768x512."""
    from dipcodec.encoder import stretched_schedule

    return [stretched_schedule(schedule, _at(b), 512, 768).iterations for b in (0.25, 0.5, 0.75)]


def test_cheaper_networks_get_more_iterations_up_to_the_cap(monkeypatch):
    import dipcodec.encoder as encoder
    from dipcodec.encoder import FILTERED_COST, PRESET_COST, PRESETS, TUNING_FILTER_COST, iteration_cost, stretched_schedule

    # The presets were sized for the network of 768x512 at the default quality (0.5 bpp).
    assert PRESET_COST == pytest.approx(iteration_cost(_at(0.5), 512, 768), abs=0.05)
    default = PRESETS["default"]
    untuned = dataclasses.replace(default, filtered_share=0.0, qat_iterations=0)
    # That network keeps the count of a schedule sized for it.
    assert stretched_schedule(untuned, _at(0.5), 512, 768) == untuned
    # A cheaper one gets more, in proportion to its cost, and nothing else in the schedule changes.
    low = stretched_schedule(untuned, _at(0.25), 512, 768)
    ratio = PRESET_COST / iteration_cost(_at(0.25), 512, 768)
    assert 1.2 < ratio and low.iterations == round(untuned.iterations * ratio)
    assert low.qat_iterations == untuned.qat_iterations and low.learning_rate == untuned.learning_rate
    # The quantization-aware iterations, tuned through the file's post-filter, cost TUNING_FILTER_COST
    # more each, paid for with float iterations.
    unfiltered = dataclasses.replace(default, filtered_share=0.0)
    tuned = stretched_schedule(unfiltered, _at(0.5), 512, 768)
    assert tuned.iterations == round(default.iterations - default.qat_iterations * TUNING_FILTER_COST / PRESET_COST)
    assert tuned.qat_iterations == default.qat_iterations
    # The iterations trained through the post-filter cost FILTERED_COST more.
    dearer = PRESET_COST + default.filtered_share * FILTERED_COST
    assert stretched_schedule(default, _at(0.5), 512, 768).iterations == round(
        default.iterations * PRESET_COST / dearer - default.qat_iterations * TUNING_FILTER_COST / dearer)
    # A dearer network gets fewer, down to min_stretch of the count.
    floored = FitSchedule(iterations=100, qat_iterations=0, sized_for_cost=PRESET_COST / 4, min_stretch=0.5)
    assert stretched_schedule(floored, _at(0.5), 512, 768).iterations == 50
    # The stretch is capped, and a schedule sized for no network (a tool's, a restoration's) is exact.
    monkeypatch.setattr(encoder, "MAX_STRETCH", 1.1)
    assert stretched_schedule(untuned, _at(0.25), 512, 768).iterations == round(1.1 * default.iterations)
    exact = FitSchedule(iterations=100, qat_iterations=0)
    assert stretched_schedule(exact, _at(0.25), 512, 768) == exact


def test_the_presets_iteration_counts_as_the_readme_quotes_them():
    """The counts README.md and the PRESETS comment give for 768x512 at 0.25 / 0.5 / 0.75 bpp."""
    from dipcodec.encoder import PRESETS

    default, fast, best = PRESETS["default"], PRESETS["fast"], PRESETS["best"]
    assert default.filtered_share == fast.filtered_share == 0.5
    assert _counts(default) == [2994, 2344, 1919]
    assert _counts(fast) == [936, 733, 600]
    # Neither the filter's nor the tuning's price: fast is sized for a network a third dearer.
    assert _counts(dataclasses.replace(default, filtered_share=0.0)) == [3541, 2667, 2130]
    assert _counts(dataclasses.replace(fast, filtered_share=0.0)) == [1107, 834, 666]
    # best keeps its count at dearer networks (min_stretch 1) but for the tuning's price.
    assert _counts(best) == [5646, 4252, 4302]


def test_restorations_keep_the_presets_count_and_pytorchs_adam_memory():
    from dipcodec.encoder import PRESETS
    from dipcodec.restoration.modes import AVERAGE_DECAY, INPUT_JITTER, Restoration, noise_level

    fast = PRESETS["fast"]
    image = make_image(64, 64)
    # fast's shorter Adam memory is plain coding's.
    assert fast.adam_beta2 != DEFAULT_BETA2
    assert Restoration("super-resolution", scale=4).schedule(fast, image) == dataclasses.replace(
        fast, sized_for_cost=None, adam_beta2=DEFAULT_BETA2, input_jitter=INPUT_JITTER)
    assert Restoration("denoise").schedule(fast, image) == dataclasses.replace(
        fast, sized_for_cost=None, adam_beta2=DEFAULT_BETA2, input_jitter=INPUT_JITTER, average_decay=AVERAGE_DECAY,
        stop_mse=noise_level(image) ** 2)


def test_the_float_fit_uses_the_schedules_adam_memory(monkeypatch):
    """The presets' beta2 reaches the optimizer (the quantization-aware phase keeps PyTorch's)."""
    import dipcodec.fit as fit_module
    from dipcodec.encoder import PRESETS

    made, adam = [], torch.optim.Adam

    def recording_adam(params, **options):
        made.append(options.get("betas", (0.9, DEFAULT_BETA2)))
        return adam(params, **options)

    monkeypatch.setattr(fit_module.torch.optim, "Adam", recording_adam)
    config = choose_network(32, 32, 3, 2.0 * 32 * 32, purpose="restore")
    net = Generator(config).load(reference_weights(config, 0))
    noise = fixed_input(config, 0, 32, 32)
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fit(net, noise, target, dataclasses.replace(PRESETS["fast"], iterations=2, sized_for_cost=None))
    assert made == [(0.9, PRESETS["fast"].adam_beta2)] and PRESETS["fast"].adam_beta2 < DEFAULT_BETA2
    assert PRESETS["default"].adam_beta2 < DEFAULT_BETA2 == PRESETS["best"].adam_beta2


def test_warm_started_frames_fit_with_their_own_adam_memory():
    """Warm frames take WARM_BETA2 whatever their preset's (best's is PyTorch's)."""
    from dipcodec.encoder import PRESETS
    from dipcodec.transfer.warmstart import WARM_BETA2, warm_schedule

    assert WARM_BETA2 < DEFAULT_BETA2
    assert {warm_schedule(PRESETS[p], 30.0).adam_beta2 for p in ("fast", "default", "best")} == {WARM_BETA2}


def test_warm_started_frames_fit_a_third_of_a_frame_coded_alone():
    """A warm frame's schedule, stretched as the encoder stretches it, is at most a third of the
    iterations of the same frame coded alone, and trains the same last share through a filter."""
    from dipcodec.encoder import PRESETS, quality_to_bpp, stretched_schedule
    from dipcodec.transfer.warmstart import warm_schedule

    for height, width in ((480, 854), (512, 768)):
        config = choose_network(height, width, 3, quality_to_bpp(75) * height * width)
        for preset in ("fast", "default", "best"):
            alone = stretched_schedule(PRESETS[preset], config, height, width)
            warm = stretched_schedule(warm_schedule(PRESETS[preset], 30.0), config, height, width)
            assert warm.filtered_share == alone.filtered_share
            assert 0.3 < (warm.iterations + warm.qat_iterations) / (alone.iterations + alone.qat_iterations) <= 1 / 3


def _network_counting_shuffles(size: tuple[int, int], monkeypatch) -> tuple:
    """A list the pixel shuffles will be logged to, the encoder's network for this size, its input, a target."""
    import dipcodec.network as network_module

    shuffles, shuffle = [], torch.nn.functional.pixel_shuffle
    monkeypatch.setattr(network_module.F, "pixel_shuffle", lambda x, s: shuffles.append(s) or shuffle(x, s))
    height, width = size
    config = choose_network(height, width, 3, 2.0 * height * width)
    assert config.shuffle == 2
    net = Generator(config).load(reference_weights(config, 0))
    target = torch.rand((1, 3, height, width), generator=torch.Generator().manual_seed(1))
    return shuffles, net, fixed_input(config, 0, height, width), target


def _losses_and_gradients(net: Generator, shuffles: list, *ways) -> tuple[list[float], list[list]]:
    """Each way's loss and gradients; ``shuffles`` is left with the last way's pixel shuffles."""
    losses, grads = [], []
    for loss_of in ways:
        net.zero_grad(set_to_none=True)
        shuffles.clear()
        loss = loss_of()
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in net.parameters()])
    return losses, grads


@pytest.mark.parametrize("size, packs", [((64, 64), True), ((40, 36), True), ((33, 35), False)],
                         ids=["stride", "padded", "odd"])
def test_the_plain_objective_is_the_image_mse_with_the_same_gradients(size, packs, monkeypatch):
    """The fit's loss skips the pixel shuffle where the sides allow it (``objective``): the loss must
    stay the image MSE (up to summation order) and the gradients be the very same numbers, so that
    files do not change. Sides of the stride and sides the network pads skip the shuffle; odd sides
    fall back to the shuffled image."""
    shuffles, net, noise, target = _network_counting_shuffles(size, monkeypatch)
    losses, grads = _losses_and_gradients(net, shuffles, lambda: image_mse(net(noise), target),
                                          lambda: objective(net, target)(None, noise))
    assert shuffles == ([] if packs else [2])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for plain, packed in zip(*grads, strict=True):
        assert torch.equal(plain, packed)


@pytest.mark.parametrize("size", [(64, 64), (40, 36), (33, 35)], ids=["stride", "padded", "odd"])
@pytest.mark.parametrize("offset", [(1, 2), (5, 0), (13, 7)])
def test_a_rolled_canvas_objective_is_its_image_mse_without_the_shuffle(size, offset, monkeypatch):
    """A frame that follows the camera (``CanvasMSE``) also skips the pixel shuffle, at any sides:
    the target goes back onto the canvas instead. Same loss and gradients, up to summation order."""
    shuffles, net, noise, target = _network_counting_shuffles(size, monkeypatch)
    rolled = CanvasMSE(offset)
    losses, grads = _losses_and_gradients(net, shuffles, lambda: rolled(net(noise), target),
                                          lambda: objective(net, target, rolled)(None, noise))
    assert shuffles == []
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[0] != pytest.approx(image_mse(net(noise), target).item(), rel=1e-3)  # the roll matters
    for plain, packed in zip(*grads, strict=True):
        assert torch.allclose(plain, packed, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n, size, reach", [(2, (2, 2), 3), (2, (2, 6), 2), (1, (8, 6), 0), (2, (10, 4), 1)])
def test_the_planes_of_a_mirrored_image_are_one_gather_of_its_planes(n, size, reach):
    """The planes of an image mirrored by ``2 * reach`` pixels (numpy's "reflect", which folds again
    where the image is narrower) come from the image's planes alone, for batches and for planes
    cropped from a larger output (not contiguous)."""
    from dipcodec.fit import _mirrored_planes

    height, width = size
    larger = torch.rand((n, 3, height + 2, width + 4), generator=torch.Generator().manual_seed(reach))
    pad = ((0, 0), (0, 0), (2 * reach,) * 2, (2 * reach,) * 2)
    mirrored = torch.from_numpy(np.pad(larger[..., :height, :width].numpy(), pad, mode="reflect"))
    planes = torch.nn.functional.pixel_unshuffle(larger, 2)[..., : height // 2, : width // 2]
    assert not planes.is_contiguous()
    assert torch.equal(_mirrored_planes(planes, reach), torch.nn.functional.pixel_unshuffle(mirrored, 2))


@pytest.mark.parametrize("size, packs", [((64, 64), True), ((40, 36), True), ((33, 35), False)],
                         ids=["stride", "padded", "odd"])
@pytest.mark.parametrize("taps", [3, 5, 7, 9])
def test_a_filtered_objective_is_the_filtered_image_mse_without_the_shuffle(size, packs, taps, monkeypatch):
    """Through a post-filter of any size (``FilteredMSE``) the fit's loss also skips the pixel
    shuffle where the sides allow it: the same loss and gradients as filtering the full-size image
    with mirrored borders, up to summation order."""
    from dipcodec.fit import FilteredMSE
    from dipcodec.postfilter import PostFilter

    shuffles, net, noise, target = _network_counting_shuffles(size, monkeypatch)
    rng = np.random.default_rng(taps)
    codes = tuple(tuple(int(v) for v in rng.integers(-40, 41, taps * taps + 1)) for _ in range(12))
    filtered = FilteredMSE.of(PostFilter(taps, 8, codes, phases=4))
    losses, grads = _losses_and_gradients(net, shuffles, lambda: filtered(net(noise), target),
                                          lambda: objective(net, target, filtered)(None, noise))
    assert shuffles == ([] if packs else [2])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert losses[0] != pytest.approx(image_mse(net(noise), target).item(), rel=1e-3)  # the filter matters
    for full_size, packed in zip(*grads, strict=True):
        assert torch.allclose(full_size, packed, rtol=1e-4, atol=1e-6)


def test_the_objective_keeps_a_restorations_own_loss():
    """A loss other than the plain one (inpainting's known pixels) is used as it is, on the shuffled image."""
    config = choose_network(32, 32, 3, 2.0 * 32 * 32)
    net = Generator(config).load(reference_weights(config, 0))
    noise = fixed_input(config, 0, 32, 32)
    seen = []

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(output.shape)
        return (output - target).abs().mean()

    objective(net, torch.zeros(1, 3, 32, 32), loss_fn)(None, noise)
    assert seen == [torch.Size([1, 3, 32, 32])]


def _card_problem() -> tuple:
    """The encoder's network for the 32x32 test card, its input, and the card as a target."""
    config = choose_network(32, 32, 3, 2.0 * 32 * 32)
    image = make_image(32, 32)
    target = (torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255).unsqueeze(0)
    return config, fixed_input(config, 0, 32, 32), target


def test_the_stop_rule_reads_only_the_plain_share_of_the_fit():
    """``stop_mse`` ends a fit whose plain loss reaches it, but not one whose filtered loss does: a
    filter lowers the loss of the same image (here it quarters it)."""
    config, noise, target = _card_problem()

    def run(schedule: FitSchedule) -> list[float]:
        losses = []
        fit(Generator(config).load(reference_weights(config, 0)), noise, target, schedule,
            lambda i, p: losses.append(10 ** (-p / 10)), filter_loss=lambda: lambda o, t: image_mse(o, t) / 4)
        return losses

    plain = run(FitSchedule(iterations=20, qat_iterations=0))
    mark = 0.9 * min(plain)  # the plain loss never gets there; a quarter of it does
    assert len(run(FitSchedule(iterations=20, qat_iterations=0, stop_mse=mark))) == 20
    filtered = run(FitSchedule(iterations=20, qat_iterations=0, stop_mse=mark, filtered_share=0.5))
    assert len(filtered) == 20 and min(filtered[10:]) < mark
    assert len(run(FitSchedule(iterations=20, qat_iterations=0, stop_mse=plain[5]))) <= 6


def test_the_fit_trains_through_the_filter_from_its_share_on():
    """``filter_loss`` is asked for at the start of the filtered share and every ``refilter_every``
    iterations after; its loss is the one minimized from there, and the PSNR returned is still the
    plain loss's (here the "filter" quadruples the plain loss)."""
    config, noise, target = _card_problem()
    net = Generator(config).load(reference_weights(config, 0))
    done, asked_at = [0], []

    def filter_loss():
        asked_at.append(done[0])
        return lambda output, target: 4 * image_mse(output, target)

    schedule = FitSchedule(iterations=20, qat_iterations=0, filtered_share=0.5, refilter_every=4)
    psnr = fit(net, noise, target, schedule, lambda i, _: done.__setitem__(0, i), filter_loss=filter_loss)
    assert asked_at == [10, 14, 18]
    assert psnr == pytest.approx(10 * np.log10(1 / _mse(net, noise, target)), abs=1e-4)
    fit(Generator(config).load(reference_weights(config, 0)), noise, target,
        dataclasses.replace(schedule, filtered_share=0.0), filter_loss=filter_loss)
    assert asked_at == [10, 14, 18]  # no share, no filter
