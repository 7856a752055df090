"""Base models (file, training, coding against one) and sequences of frames."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dipcodec
from dipcodec.encoder import encode_detailed
from dipcodec.errors import DecodeError, InputError
from dipcodec.network import reference_weights
from dipcodec.transfer import meta
from dipcodec.transfer.basefile import BaseModel, base_from_bytes, base_to_bytes, load_base, save_base
from dipcodec.transfer.meta import MetaSchedule, standard_network, train_base
from dipcodec.transfer.sequence import SequenceFile, mean_weights, pack_sequence, sequence_info, unpack_sequence

from conftest import make_image, psnr, with_crc

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_META = MetaSchedule(steps=4, inner_iterations=3, tasks_per_step=2, crop=64)


def training_images() -> list[np.ndarray]:
    return [make_image(64, 80), np.ascontiguousarray(make_image(80, 64)[::-1])]


@pytest.fixture(scope="module")
def tiny_base() -> BaseModel:
    return train_base(training_images(), standard_network(8), TINY_META, seed=3)


def moving_frames(count: int, size: int = 32, step: int = 1) -> list[np.ndarray]:
    """A test card seen through a window that slides ``step`` pixels right per frame."""
    wide = make_image(size, size + step * count)
    return [np.ascontiguousarray(wide[:, step * i : step * i + size]) for i in range(count)]


# ---------------------------------------------------------------- base model files

def test_base_files_refuse_bicubic_networks(tiny_base):
    from dipcodec.container import network_bytes

    bicubic = dataclasses.replace(tiny_base.network, upsample="bicubic")
    with pytest.raises(ValueError, match="bicubic"):
        base_to_bytes(dataclasses.replace(tiny_base, network=bicubic))
    # A forged base declaring upsample byte 2 (CRC recomputed) is refused by the reader too.
    data = base_to_bytes(tiny_base)
    description = network_bytes(tiny_base.network)
    at = data.index(description) + len(description) - (1 if tiny_base.network.activation == "relu" else 2)
    assert data[at] == 0
    body = data[:at] + bytes([2]) + data[at + 1 : -4]
    with pytest.raises(DecodeError, match="cannot upsample bicubically"):
        base_from_bytes(with_crc(body))


def test_base_file_round_trips_weights_and_id(tiny_base, tmp_path):
    save_base(tiny_base, tmp_path / "b.dipbase")
    loaded = load_base(tmp_path / "b.dipbase")
    assert loaded.id == tiny_base.id and len(loaded.id) == 8
    assert loaded.network == tiny_base.network
    for a, b in zip(loaded.weights, tiny_base.weights):
        np.testing.assert_array_equal(a, b)
    assert loaded.info["method"] == "reptile" and loaded.info["step"] == TINY_META.steps


def test_base_id_is_a_hash_of_the_weights(tiny_base):
    changed = [w.copy() for w in tiny_base.weights]
    changed[0].flat[0] += np.float32(1e-3)
    other = BaseModel(tiny_base.network, tuple(changed), tiny_base.info)
    assert other.id != tiny_base.id
    relabelled = BaseModel(tiny_base.network, tiny_base.weights, {"note": "different description"})
    assert relabelled.id == tiny_base.id


def test_a_sine_base_is_written_as_version_2_and_a_relu_base_as_version_1(tiny_base):
    sine = BaseModel(dataclasses.replace(tiny_base.network, activation="sine"), tiny_base.weights)
    relu = BaseModel(dataclasses.replace(tiny_base.network, activation="relu"), tiny_base.weights)
    data = base_to_bytes(sine)
    assert data[4] == 2 and base_to_bytes(relu)[4] == 1
    loaded = base_from_bytes(data)
    assert loaded.network == sine.network and loaded.id == sine.id != relu.id
    body = bytearray(data[:-4])
    body[4] = 1  # version 1 knows no activation byte
    with pytest.raises(DecodeError, match="trailing bytes"):
        base_from_bytes(with_crc(body))


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "length"])
def test_damaged_base_file_is_a_clean_error(tiny_base, tmp_path, damage):
    data = bytearray(base_to_bytes(tiny_base))
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) - 9]
    elif damage == "magic":
        data[:4] = b"DIPC"
    else:  # a forged network description of a huge network, CRC fixed up: refused before allocating
        data = bytearray(with_crc(b"DIPB\x01" + bytes([9, 1, 0x80, 4, 0x80, 4, 1, 3, 2, 0]) + b"\x00"))
    with pytest.raises(DecodeError):
        base_from_bytes(bytes(data))
    (tmp_path / "bad.dipbase").write_bytes(bytes(data))
    with pytest.raises(InputError):
        load_base(tmp_path / "bad.dipbase")


@pytest.mark.parametrize("description", [b"[" * 3000 + b"]" * 3000, b"9" * 5000, b"\xff\xfe"])
def test_a_base_files_forged_description_is_a_clean_error(tiny_base, description):
    """Python's JSON reader raises RecursionError on deep nesting and a plain ValueError on a huge
    integer: each must come out as a DecodeError."""
    from dipcodec.container import varint

    body = base_to_bytes(dataclasses.replace(tiny_base, info={"x": 1}))[:-4]
    at = body.index(b'{"x":1}')
    assert body[at - 1] == 7  # the description's length, one varint byte
    forged = with_crc(body[: at - 1] + varint(len(description)) + description + body[at + 7 :])
    with pytest.raises(DecodeError, match="damaged description"):
        base_from_bytes(forged)


# ---------------------------------------------------------------- training

def test_training_moves_the_weights_and_is_deterministic(tiny_base):
    seeded = reference_weights(tiny_base.network, 3)
    assert any(not np.array_equal(a, b) for a, b in zip(seeded, tiny_base.weights))
    again = train_base(training_images(), standard_network(8), TINY_META, seed=3)
    assert again.id == tiny_base.id


def test_training_fits_with_the_inner_optimizer_it_is_given(tiny_base):
    other = train_base(training_images(), standard_network(8), dataclasses.replace(TINY_META, inner_adam_beta2=0.5),
                       seed=3)
    assert other.id != tiny_base.id
    assert other.info["settings"]["schedule"]["inner_adam_beta2"] == 0.5


def test_training_resumes_from_its_checkpoint(tiny_base, tmp_path, monkeypatch):
    monkeypatch.setattr(meta, "CHECKPOINT_EVERY", 2)
    checkpoint = tmp_path / "b.dipbase.partial"

    def interrupt(done, total, psnr):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_base(training_images(), standard_network(8), TINY_META, seed=3, progress=interrupt,
                   checkpoint=checkpoint)
    assert load_base(checkpoint).info["step"] == 2
    resumed = train_base(training_images(), standard_network(8), TINY_META, seed=3, checkpoint=checkpoint,
                         resume=True)
    assert resumed.id == tiny_base.id  # the same base as an unbroken run
    with pytest.raises(InputError, match="different training run"):
        train_base(training_images(), standard_network(8), MetaSchedule(steps=5, inner_iterations=3, tasks_per_step=2, crop=64),
                   seed=3, checkpoint=checkpoint, resume=True)


def test_training_images_are_the_folders_pillow_images(tmp_path):
    from PIL import Image

    from dipcodec.transfer.meta import training_images

    colour = make_image(16, 24)
    Image.fromarray(colour).save(tmp_path / "b.png")
    Image.fromarray(colour[..., 1]).save(tmp_path / "a.bmp")
    (tmp_path / ".hidden.png").write_bytes(b"not read")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "x.dip").write_bytes(b"DIPC")  # dipcodec's own files are not training images
    images = training_images(tmp_path)
    assert [i.shape for i in images] == [(16, 24), (16, 24, 3)]  # sorted by name
    gray = training_images(tmp_path, grayscale=True)[1]
    luma = 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
    assert gray.dtype == np.uint8 and np.abs(gray - luma).max() <= 0.5
    with pytest.raises(InputError, match="holds no images"):
        training_images(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        training_images(tmp_path / "b.png")


def test_training_refuses_images_smaller_than_its_crops():
    with pytest.raises(InputError, match="at least 64"):
        train_base([make_image(40, 80)], standard_network(8), TINY_META)


def test_training_names_a_bad_device_as_the_codec_does():
    # As encode's --device: an InputError (one line from the CLI), not PyTorch's own error mid-training.
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        train_base(training_images(), standard_network(8), TINY_META, device="tpu")


# ---------------------------------------------------------------- coding against a base

def test_a_file_coded_from_a_base_decodes_only_with_it(tiny_base, tmp_path):
    image = make_image(64, 64)
    result = encode_detailed(image, quality=75, preset="fast", base=tiny_base)
    details = dipcodec.info(result.data)
    assert details["reference"] == "base" and details["base_id"] == tiny_base.name
    assert details["architecture"]["channels"] == list(tiny_base.network.channels)
    with pytest.raises(DecodeError, match=tiny_base.name):
        dipcodec.decode(result.data)
    save_base(tiny_base, tmp_path / "b.dipbase")
    decoded = dipcodec.decode(result.data, base=tmp_path / "b.dipbase")
    np.testing.assert_array_equal(decoded, result.pixels)
    assert psnr(image, decoded) > 20


def test_a_base_too_coarse_for_a_small_image_names_the_base():
    from dipcodec.transfer.basefile import shipped_bases

    base = shipped_bases()[0]
    with pytest.raises(InputError, match=f"base model {base.name} does not fit this image: .*too large"):
        dipcodec.encode(make_image(8, 8), bpp=4.0, preset="fast", base=base)


def test_a_base_for_other_images_is_refused(tiny_base):
    with pytest.raises(InputError, match="3-channel"):
        dipcodec.encode(make_image(64, 64, gray=True), quality=75, preset="fast", base=tiny_base)


@pytest.mark.parametrize("purpose", ["compress", "restore"])
def test_default_base_is_a_shipped_base_close_to_the_affordable_width(purpose):
    from dipcodec.encoder import base_start
    from dipcodec.layout import BITS_PER_WEIGHT, choose_network, network_layout
    from dipcodec.transfer.basefile import shipped_bases

    layout = network_layout(512, 768, 3, purpose=purpose)
    # Bases ship for both layouts: the sine network of compression and the ReLU one of restoration.
    ours = [b for b in shipped_bases() if b.network == layout(b.network.input_channels)]
    assert ours
    shipped = ours[0]
    width = shipped.network.input_channels
    # A budget that affords a slightly wider network than the base's: the base is taken, as it is.
    budget = BITS_PER_WEIGHT * layout(width + 2).parameter_count()
    assert choose_network(512, 768, 3, budget, purpose=purpose).input_channels == width + 2
    start = base_start("default", 512, 768, 3, budget, purpose=purpose)
    assert start is not None and start.kind == "base" and start.base_id == shipped.id
    assert start.network == shipped.network
    # A budget for a network much wider than any base near it: a shipped base within 90% of it, or the seed.
    wide = choose_network(512, 768, 3, 4 * budget, purpose=purpose).input_channels
    start = base_start("default", 512, 768, 3, 4 * budget, purpose=purpose)
    assert start is None or 0.9 * wide <= start.network.input_channels <= wide
    assert base_start("default", 512, 768, 1, budget, purpose=purpose) is None  # no grayscale bases ship
    assert base_start("none", 512, 768, 3, budget, purpose=purpose) is None


def test_default_bases_cover_the_compression_rates_of_768x512_but_not_upscaling():
    from dipcodec.encoder import base_start

    # One sine base per width of 768x512 at 0.25, 0.5 and 0.75 bpp (BENCHMARKS.md, "Base models");
    # super-resolution's network has none.
    for bpp, width in ((0.25, 67), (0.5, 95), (0.75, 117)):
        start = base_start("default", 512, 768, 3, bpp * 512 * 768)
        assert start is not None and start.network.input_channels == width and start.network.activation == "sine"
    assert base_start("default", 512, 768, 3, 0.5 * 512 * 768, purpose="upscale") is None


def test_auto_base_is_the_shipped_one_at_fast_and_the_seed_otherwise(monkeypatch):
    import dataclasses

    from dipcodec import encoder
    from dipcodec.encoder import PRESETS, base_start, resolve_base

    assert resolve_base("auto", "fast") == "default"
    assert resolve_base("auto", "default") == resolve_base("auto", "best") == "none"
    for purpose in ("restore", "upscale", "denoise"):  # no base was measured with a restoration
        assert resolve_base("auto", "fast", purpose=purpose) == "none"
    assert resolve_base("none", "fast") == "none" and resolve_base("x.dipbase", "default") == "x.dipbase"
    assert resolve_base("auto", "a tool's own") == "none"
    # base_start resolves "auto" for its preset: the shipped base at fast, the seed at default.
    budget = 0.5 * 512 * 768
    assert base_start("auto", 512, 768, 3, budget, preset="fast") == base_start("default", 512, 768, 3, budget)
    assert base_start("auto", 512, 768, 3, budget, preset="fast") is not None
    assert base_start("auto", 512, 768, 3, budget, preset="default") is None
    assert base_start("auto", 512, 768, 3, budget, purpose="restore", preset="fast") is None
    # End to end, on an image whose network a shipped base fits (a one-iteration fit: what is coded
    # against which reference is the point here, not the fit).
    for name in PRESETS:
        monkeypatch.setitem(PRESETS, name, dataclasses.replace(PRESETS[name], iterations=1, qat_iterations=1))
    image = make_image(512, 768)
    details = {preset: dipcodec.info(encoder.encode(image, quality=50, preset=preset)) for preset in ("fast", "default")}
    assert details["fast"]["reference"] == "base" and details["fast"]["base_id"]
    assert details["default"]["reference"] == "seed"


def test_sequence_key_frames_take_the_auto_base_of_plain_coding_only(monkeypatch):
    from dipcodec.restoration.modes import PURPOSES
    from dipcodec.transfer import warmstart

    asked = []

    def spy(base, *args, purpose, preset):
        asked.append((base, purpose, preset))
        raise InputError("stop before fitting")

    monkeypatch.setattr(warmstart, "base_start", spy)
    frames = moving_frames(2)
    for preset, mask in (("fast", None), ("default", None), ("fast", np.zeros((32, 32), np.uint8))):
        with pytest.raises(InputError, match="stop before fitting"):
            dipcodec.encode_sequence(frames, quality=75, preset=preset, mask=mask)
    # base_start resolves "auto" (tested above): what matters here is the preset and purpose it gets.
    assert asked == [("auto", "compress", "fast"), ("auto", "compress", "default"), ("auto", PURPOSES["inpaint"], "fast")]


def test_default_base_falls_back_to_the_seed_where_no_base_fits():
    data = dipcodec.encode(make_image(24, 32), quality=75, preset="fast", base="default")
    assert dipcodec.info(data)["reference"] == "seed"


# ---------------------------------------------------------------- sequences

@pytest.fixture(scope="module")
def sequence():
    frames = moving_frames(4)
    results = []
    data = dipcodec.encode_sequence(frames, bpp=4.0, preset="fast", keyint=3,
                                    on_frame=lambda i, r, s: results.append(r))
    return frames, data, results


def test_sequence_decodes_to_what_the_encoder_saw(sequence):
    frames, data, results = sequence
    decoded = dipcodec.decode_sequence(data)
    assert len(decoded) == 4
    # Frames carry post-filters of their own (which stay out of the weights the next frame starts from).
    from dipcodec.container import unpack

    assert any(unpack(f).post_filter for f in unpack_sequence(data).frames)
    for frame, out, result in zip(frames, decoded, results):
        np.testing.assert_array_equal(out, result.pixels)
        assert psnr(frame, out) > 22


def test_sequence_frames_refer_to_the_frame_before_and_keyint_restarts(sequence):
    _, data, _ = sequence
    details = sequence_info(data)
    assert [f["reference"] for f in details["frame_info"]] == ["seed", "previous-frame", "previous-frame", "seed"]
    assert details["key_frames"] == [0, 3] and details["frames"] == 4


def test_warm_started_frames_cost_fewer_bits(sequence):
    """Their weights, that is: a frame's post-filter (a section of its own, chosen per frame at the
    encoder's price of bytes) is no part of what warm-starting saves."""
    from dipcodec.container import section_sizes

    _, _, results = sequence
    network_bytes = [len(r.data) - section_sizes(r.data).get("post_filter", 0) for r in results]
    assert network_bytes[1] < network_bytes[0]
    assert network_bytes[2] < network_bytes[0]


def test_warm_frames_choose_their_grid_by_what_rounding_costs(sequence, monkeypatch):
    from dipcodec.container import section_sizes, unpack
    from dipcodec.postfilter_fit import GRID_DB_PER_OCTAVE
    from dipcodec.transfer import warmstart
    from dipcodec.transfer.warmstart import WARM_GRID_COARSENINGS, warm_grids

    frames, data, _ = sequence
    key = unpack(unpack_sequence(data).frames[0])
    # A frame that repeats its key frame, with a warm fit that does not move (learning rate 0), has
    # deltas of zero, which every grid rounds alike: the coarsest costs it no distortion and fewest
    # bytes. (With the real fit, where a still frame of 32x32 pixels ends up among the grids is as
    # chaotic as the fit: its key frame is far from done, and the float32 rounding of one machine
    # against another's moved it from the coarsest grid to the finest.)
    monkeypatch.setattr(warmstart, "WARM_LEARNING_RATE", 0.0)
    still = []
    data_still = dipcodec.encode_sequence([frames[0], frames[0]], bpp=4.0, preset="fast",
                                          on_frame=lambda i, r, s: still.append(r))
    monkeypatch.undo()
    assert still[1].step_codes == warm_grids(still[0].step_codes)[-1]
    np.testing.assert_array_equal(dipcodec.decode_sequence(data_still)[1], still[1].pixels)
    weights = [len(r.data) - section_sizes(r.data).get("post_filter", 0) for r in still]
    assert weights[1] < 0.6 * weights[0]
    # Its post-filter, if any (a section priced like any other bytes), is in the file's total below.
    # What it gives up against its key frame is worth the bytes it saves, at the encoder's own price.
    saved_octaves = np.log2(len(still[0].data) / len(still[1].data))
    lost_db = psnr(frames[0], still[0].pixels) - psnr(frames[0], still[1].pixels)
    assert lost_db < GRID_DB_PER_OCTAVE * saved_octaves
    # The moving card of the fixture changes a lot for its 32x32 pixels: the frame after the key
    # frame keeps the key frame's grid (8x coarser steps would cost it about 5 dB).
    moved = unpack(unpack_sequence(data).frames[1])
    assert {m - k for m, k in zip(moved.step_codes, key.step_codes)} == {WARM_GRID_COARSENINGS[0]}


def test_a_frame_alone_does_not_decode(sequence):
    _, data, _ = sequence
    inter = unpack_sequence(data).frames[1]
    with pytest.raises(DecodeError, match="whole sequence"):
        dipcodec.decode(inter)
    key = unpack_sequence(data).frames[3]
    assert dipcodec.decode(key).shape == (32, 32, 3)  # a key frame decodes on its own


def test_averaging_window_changes_the_reference():
    frames = moving_frames(3, 24)
    data = dipcodec.encode_sequence(frames, bpp=4.0, preset="fast", average=2)
    assert unpack_sequence(data).average == 2
    decoded = dipcodec.decode_sequence(data)
    assert all(psnr(f, d) > 20 for f, d in zip(frames, decoded))
    # Read with a window of 1, the third frame is rebuilt against the wrong reference.
    sequence = unpack_sequence(data)
    wrong = dipcodec.decode_sequence(pack_sequence(SequenceFile(sequence.frames, 1, sequence.offsets)))
    np.testing.assert_array_equal(wrong[1], decoded[1])
    assert not np.array_equal(wrong[2], decoded[2])


def test_sequence_decoding_holds_only_the_averaging_windows_weights(monkeypatch):
    """A forged clip of many frames with a large network must not make the decoder keep every
    frame's weights: frames stream out of ``iter_sequence`` with only the window's weights held."""
    import gc
    import weakref

    from dipcodec.transfer import sequence as seq

    data = dipcodec.encode_sequence(moving_frames(5, 24), bpp=4.0, preset="fast", average=2)
    alive, real_decoded = [], seq.decoded_weights

    def tracked(stream, reference):
        weights = real_decoded(stream, reference)
        alive.append(weakref.ref(weights[0]))
        return weights

    monkeypatch.setattr(seq, "decoded_weights", tracked)
    frames = seq.iter_sequence(data)
    for count, _ in enumerate(frames, 1):
        gc.collect()
        assert len(alive) == count and sum(ref() is not None for ref in alive) <= 2
    np.testing.assert_array_equal(np.stack(list(seq.iter_sequence(data))), np.stack(dipcodec.decode_sequence(data)))


def test_mean_weights_is_exact_float32():
    a = [np.array([1.0, 2.0], np.float32)]
    b = [np.array([2.0, np.float32(1e-8)], np.float32)]
    out = mean_weights([a, b])
    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(out[0], np.array([1.5, (2.0 + np.float64(np.float32(1e-8))) / 2], np.float32))


@pytest.mark.parametrize("damage", ["crc", "truncate", "count", "average", "first-is-inter"])
def test_damaged_sequence_is_a_clean_error(sequence, damage):
    import struct
    import zlib

    _, data, _ = sequence
    frames = unpack_sequence(data).frames
    if damage == "crc":
        bad = bytearray(data)
        bad[20] ^= 1
    elif damage == "truncate":
        bad = data[:-30]
    else:
        if damage == "count":
            body = b"DIPS\x01\x01" + bytes([0x80, 0x80, 0x04])  # 65536 frames declared, none present
        elif damage == "average":
            body = b"DIPS\x01\x00" + pack_sequence(SequenceFile(frames[:1]))[6:-4]  # a window of 0
        else:
            body = pack_sequence(SequenceFile(frames[1:2]))[:-4]
        bad = with_crc(body)
    with pytest.raises(DecodeError):
        dipcodec.decode_sequence(bytes(bad))


@pytest.mark.parametrize("data, message", [(b"DIPS\x02\x01\x01", "too short"), (b"DIPB\x02", "too short"),
                                           (b"GIF89a" + bytes(20), "bad magic")])
def test_a_short_file_with_the_right_magic_is_called_short(data, message):
    from dipcodec.transfer.sequence import unpack_sequence

    with pytest.raises(DecodeError, match=message):
        (base_from_bytes if data.startswith(b"DIPB") else unpack_sequence)(data)


def test_sequence_settings_are_checked():
    frames = moving_frames(2, 24)
    with pytest.raises(InputError, match="same size"):
        dipcodec.encode_sequence([frames[0], make_image(24, 28)], quality=75, preset="fast")
    with pytest.raises(InputError, match="average"):
        dipcodec.encode_sequence(frames, quality=75, preset="fast", average=0)
    with pytest.raises(InputError, match="keyint"):
        dipcodec.encode_sequence(frames, quality=75, preset="fast", keyint=-1)
    with pytest.raises(InputError, match="no frames"):
        dipcodec.encode_sequence([], quality=75)


# ---------------------------------------------------------------- canvas offsets (camera motion)

def test_find_canvas_offset_recovers_a_pan_from_where_the_last_frame_was():
    from dipcodec.transfer.motion import find_canvas_offset

    canvas = make_image(48, 64)  # the network's whole (padded) output
    for previous, move in [((0, 0), (0, 0)), ((0, 0), (3, -7)), ((5, 60), (-2, 9)), ((47, 1), (13, -30))]:
        placed = ((previous[0] + move[0]) % 48, (previous[1] + move[1]) % 64)
        frame = np.roll(canvas, placed, axis=(0, 1))[:40, :56]
        assert find_canvas_offset(canvas, frame, previous) == placed
    # Unknown pixels (an inpainting mask) do not count: a frame with a block painted over still lines up.
    frame = np.roll(canvas, (2, 5), axis=(0, 1))[:40, :56].copy()
    frame[10:30, 10:40] = 255
    known = np.ones((40, 56), bool)
    known[10:30, 10:40] = False
    assert find_canvas_offset(canvas, frame, (0, 0), known=known) == (2, 5)
    # A move must bring the start closer by MOTION_MIN_GAIN_DB: a frame that is the canvas moved,
    # with noise added, stays put when the noise hides most of what the move gains.
    rng = np.random.default_rng(0)
    moved = np.roll(canvas, (0, 1), axis=(0, 1))[:40, :56].astype(float)
    for sigma, expected in [(2, (0, 1)), (60, (0, 0))]:
        noisy = np.clip(moved + rng.normal(0, sigma, moved.shape), 0, 255).astype(np.uint8)
        assert find_canvas_offset(canvas, noisy, (0, 0)) == expected
    # Moves beyond the radius are not searched.
    frame = np.roll(canvas, (0, 12), axis=(0, 1))[:40, :56]
    assert find_canvas_offset(canvas, frame, (0, 0), radius=12) == (0, 12)
    assert find_canvas_offset(canvas, frame, (0, 0), radius=11) != (0, 12)
    # Canvases whose sides are not multiples of 4 (frames under 16 pixels a side) try every move.
    small = make_image(10, 14)
    assert find_canvas_offset(small, np.roll(small, (1, -3), axis=(0, 1)), (0, 0)) == (1, 11)


def test_a_sequence_of_frames_under_16_pixels_searches_motion_too():
    results = []
    data = dipcodec.encode_sequence(moving_frames(2, 10, step=2), quality=75, preset="fast",
                                    on_frame=lambda i, r, s: results.append(r))
    for out, result in zip(dipcodec.decode_sequence(data), results):
        np.testing.assert_array_equal(out, result.pixels)


def test_a_panning_sequence_rolls_its_canvas_and_decodes_to_what_the_encoder_saw(tmp_path, capsys):
    frames = moving_frames(3, step=3)
    results = []
    data = dipcodec.encode_sequence(frames, bpp=4.0, preset="fast", on_frame=lambda i, r, s: results.append(r))
    sequence = unpack_sequence(data)
    assert sequence.version == 2
    # The window slides right, so the scene, and the canvas with it, moves left 3 pixels a frame.
    assert sequence.offsets == ((0, 0), (0, 32 - 3), (0, 32 - 6))
    assert [f["canvas_offset"] for f in sequence_info(data)["frame_info"]] == [[0, 0], [0, 29], [0, 26]]
    from test_cli import run

    path = tmp_path / "pan.dips"
    path.write_bytes(data)
    code, text, _ = run(capsys, "info", path)
    assert code == 0 and "dipcodec sequence 2" in text and text.count("canvas offset 0,") == 2
    for out, result in zip(dipcodec.decode_sequence(data), results):
        np.testing.assert_array_equal(out, result.pixels)
    # Read without its offsets, the same frames decode to other images.
    still = dipcodec.decode_sequence(pack_sequence(SequenceFile(sequence.frames, sequence.average)))
    np.testing.assert_array_equal(still[0], results[0].pixels)
    assert psnr(frames[1], still[1]) < psnr(frames[1], results[1].pixels) - 3


def test_without_motion_a_sequence_is_written_as_version_1(tmp_path, capsys):
    from PIL import Image

    from test_cli import run

    paths = []
    for i, frame in enumerate(moving_frames(2, 24, step=3)):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(frame).save(paths[-1])
    for flags, version in [(["--no-motion"], 1), ([], 2)]:
        out = tmp_path / f"pan{version}.dips"
        code, _, err = run(capsys, "encode-seq", *paths, "-o", out, "--bpp", "4", "--preset", "fast", *flags)
        assert code == 0, err
        data = out.read_bytes()
        assert data[4] == version and any(any(o) for o in unpack_sequence(data).offsets) == (version == 2)
        assert len(dipcodec.decode_sequence(data)) == 2


def test_canvas_offsets_round_trip_and_forged_ones_are_clean_errors(sequence):
    _, data, _ = sequence
    frames = unpack_sequence(data).frames
    offsets = ((0, 0), (1, 31), (0, 0), (31, 2))
    packed = pack_sequence(SequenceFile(frames, 1, offsets))
    assert packed[4] == 2 and unpack_sequence(packed).offsets == offsets
    assert unpack_sequence(pack_sequence(SequenceFile(frames, 1))).offsets == ((0, 0),) * 4
    with pytest.raises(ValueError, match="one canvas offset per frame"):
        SequenceFile(frames, 1, ((0, 0),))
    # The 32x32 frames' canvas is 32x32: an offset of 32 lies outside it.
    with pytest.raises(DecodeError, match="canvas offset 0,32 lies outside its 32x32 canvas"):
        dipcodec.decode_sequence(pack_sequence(SequenceFile(frames, 1, ((0, 0), (0, 32), (0, 0), (0, 0)))))
    # An offset past any canvas is refused while reading: the varint's limit.
    body = b"DIPS\x02\x01\x01" + b"\x80\x80\x01\x00" + b"\x00"
    with pytest.raises(DecodeError, match=r"canvas offset \(rows\) of frame 0"):
        unpack_sequence(with_crc(body))


# ---------------------------------------------------------------- command line

def test_cli_encode_seq_decode_seq_and_info(tmp_path, capsys):
    from PIL import Image

    from test_cli import run

    paths = []
    for i, frame in enumerate(moving_frames(3, 24)):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(frame).save(paths[-1])
    out = tmp_path / "clip.dips"
    code, _, err = run(capsys, "encode-seq", *paths, "-o", out, "--bpp", "4", "--preset", "fast")
    assert code == 0, err
    assert "frame 3/3" in err and "3 frames" in err
    code, text, _ = run(capsys, "info", out)
    assert code == 0 and "3 frames" in text and text.count("reference previous-frame") == 2
    code, _, err = run(capsys, "decode-seq", out, tmp_path / "frames")
    assert code == 0, err
    decoded = dipcodec.decode_sequence(out.read_bytes())
    for i, pixels in enumerate(decoded):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "frames" / f"frame{i:03d}.png")), pixels)
    before = (tmp_path / "frames" / "frame000.png").read_bytes()
    code, _, err = run(capsys, "decode-seq", out, tmp_path / "frames")
    assert code == 2 and "exists" in err and (tmp_path / "frames" / "frame000.png").read_bytes() == before


def test_cli_encode_seq_rejects_frames_of_different_sizes(tmp_path, capsys):
    from PIL import Image

    from test_cli import one_error_line, run

    Image.fromarray(make_image(24, 24)).save(tmp_path / "a.png")
    Image.fromarray(make_image(24, 32)).save(tmp_path / "b.png")
    code, _, err = run(capsys, "encode-seq", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "c.dips",
                       "--preset", "fast")
    assert code == 2 and "same size" in one_error_line(err)
    assert not (tmp_path / "c.dips").exists()


def test_cli_train_base_then_encode_and_decode_with_it(tmp_path, capsys):
    from PIL import Image

    from test_cli import one_error_line, run

    (tmp_path / "train").mkdir()
    for i, image in enumerate(training_images()):
        Image.fromarray(image).save(tmp_path / "train" / f"{i}.png")
    base = tmp_path / "b.dipbase"
    code, _, err = run(capsys, "train-base", tmp_path / "train", "-o", base, "--arch", "8", "--steps", "3",
                       "--inner", "2", "--crop", "64", "--quiet")
    assert code == 0, err
    assert load_base(base).network == standard_network(8)
    assert load_base(base).network.activation == "sine"
    assert not (tmp_path / "b.dipbase.partial").exists()
    relu = tmp_path / "r.dipbase"
    code, _, err = run(capsys, "train-base", tmp_path / "train", "-o", relu, "--arch", "8", "--steps", "1",
                       "--inner", "1", "--crop", "64", "--for", "restore", "--inner-beta2", "0.9", "--quiet")
    assert code == 0, err
    assert load_base(relu).info["settings"]["schedule"]["inner_adam_beta2"] == 0.9
    assert load_base(relu).network == standard_network(8, purpose="restore")
    assert load_base(relu).network.activation == "relu"
    code, text, _ = run(capsys, "info", base)
    assert code == 0 and load_base(base).name in text and "3 steps" in text
    Image.fromarray(make_image(64, 64)).save(tmp_path / "img.png")
    code, _, err = run(capsys, "encode", tmp_path / "img.png", tmp_path / "img.dip", "--base", base,
                       "--quality", "75", "--preset", "fast", "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "decode", tmp_path / "img.dip", tmp_path / "out.png")
    assert code == 2 and load_base(base).name in one_error_line(err)
    assert not (tmp_path / "out.png").exists()
    code, _, err = run(capsys, "decode", tmp_path / "img.dip", tmp_path / "out.png", "--base", base)
    assert code == 0, err
    code, _, err = run(capsys, "train-base", tmp_path / "train", "-o", tmp_path / "x.dipbase", "--inner-beta2", "1")
    assert code == 2 and "--inner-beta2" in one_error_line(err)
    (tmp_path / "b.dipbase.partial").write_bytes(b"junk")
    code, _, err = run(capsys, "train-base", tmp_path / "train", "-o", base, "--force", "--steps", "3")
    assert code == 2 and "--resume" in one_error_line(err)


def test_sequence_inpaints_every_frame_with_a_mask():
    frames = moving_frames(2, 24)
    mask = np.zeros((24, 24), np.uint8)
    mask[16:20, 4:20] = 255
    data = dipcodec.encode_sequence(frames, bpp=4.0, preset="fast", mask=mask)
    assert [f["mode"] for f in sequence_info(data)["frame_info"]] == ["inpaint", "inpaint"]
    decoded = dipcodec.decode_sequence(data)
    known = mask == 0
    assert all(psnr(f[known], d[known]) > 20 for f, d in zip(frames, decoded))
