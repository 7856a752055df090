"""The ``dipcodec`` command line: a thin layer over the Python API (and, for ``eval``, over
``dipcodec.evaluation.run``).

Exit status: 0 success, 2 bad usage or bad input (including damaged files), 1 internal error, 130
interrupted, 141 the reader closed the pipe.
Errors and warnings are one line on stderr; set ``DIPCODEC_DEBUG=1`` for a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from . import __version__
from .errors import DecodeError, DipcodecError, DipcodecWarning, InputError, MissingBaseError, warn
from .presets import PRESET_NAMES

__all__ = ["main"]


def _add_fit_options(command: argparse.ArgumentParser) -> None:
    """The options of every command that fits a network (encode, restore)."""
    command.add_argument("--preset", choices=PRESET_NAMES, default="default",
                         help="fitting effort (default: %(default)s)")
    command.add_argument("--seed", type=int, default=0, help="seed of the fixed input and initialization (default 0)")
    command.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    command.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    command.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dipcodec", description="Image compression with a Deep Image Prior network.")
    p.add_argument("--version", action="version", version=f"dipcodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description)

    enc = command("encode", "compress an image to a .dip file",
                  "Compress an image to a .dip file by fitting a small network to it and coding the network's "
                  "weights. Fitting takes minutes on a CPU (--preset fast is the quickest; --device cuda is "
                  "faster).")
    enc.add_argument("input", metavar="IN", help="any image Pillow reads (- for standard input)")
    enc.add_argument("output", metavar="OUT", help="the .dip file to write (- for standard output)")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, help="target bits per pixel (of the decoded image) of the whole file, met within 5%%")
    rate.add_argument("--quality", type=float, help="1-100, like JPEG's (default 75)")
    _add_fit_options(enc)
    restoration = enc.add_mutually_exclusive_group()
    restoration.add_argument("--mask", metavar="MASK", help="inpaint: an image whose non-zero pixels are missing, "
                                                            "or 'subtitles' to find burned-in subtitles")
    restoration.add_argument("--sr", type=int, metavar="N", help="code the image super-resolved N times (2-8)")
    restoration.add_argument("--denoise", action="store_true", help="code the image denoised")
    enc.add_argument("--base", default="auto", metavar="auto|default|PATH|none",
                     help="code the weights against a base model: 'default' (a shipped one, when one fits "
                          "the network), a .dipbase file, 'none' (the seed), or 'auto' (the preset's choice: "
                          "'default' at fast, 'none' otherwise; the default)")

    dec = command("decode", "decompress a .dip file to an image",
                  "Decompress a .dip file to an image, in the format OUT's extension names. Decoding runs the "
                  "network once: seconds, not the minutes of an encode.")
    dec.add_argument("input", metavar="IN", help="the .dip file (- for standard input)")
    dec.add_argument("output", metavar="OUT",
                     help="image to write; the format follows the extension (.png ...); - for PNG on standard output")
    dec.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    dec.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    dec.add_argument("--scale", choices=("full", "native"), default="full",
                     help="super-resolution files: the large image or one at the fitted size (default: %(default)s)")
    dec.add_argument("--base", metavar="PATH", help="the .dipbase file the file needs, if not a shipped one")

    inf = command("info", "describe a .dip, .dips or .dipbase file",
                  "Describe a .dip, .dips or .dipbase file without decoding it: image size, network, rate "
                  "(per frame for a sequence).")
    inf.add_argument("file", metavar="FILE", help="a .dip, .dips or .dipbase file (- for standard input)")
    inf.add_argument("--json", action="store_true", help="machine-readable output")

    seq = command("encode-seq", "compress the frames of a clip to a .dips file, each from the one before",
                  "Compress the frames of a clip to one .dips file, fitting each frame's network from the weights "
                  "of the frames before it. Each frame is a fit: minutes on a CPU.")
    seq.add_argument("frames", metavar="FRAME", nargs="+", help="images of one size, in order")
    seq.add_argument("-o", "--output", metavar="OUT", required=True, help="the .dips file to write")
    rate = seq.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=float, help="target bits per pixel of the key frames (later frames cost less)")
    rate.add_argument("--quality", type=float, help="1-100, like JPEG's (default 75)")
    seq.add_argument("--keyint", type=int, default=0, metavar="N",
                     help="an independently decodable frame every N frames (default 0: the first only)")
    seq.add_argument("--average", type=int, default=1, metavar="K",
                     help="start each frame from the mean of the last K frames' weights (default 1: the previous frame)")
    seq.add_argument("--base", default="auto", metavar="auto|default|PATH|none",
                     help="key frames' base model, as for encode (default: %(default)s)")
    seq.add_argument("--mask", metavar="MASK", help="inpaint every frame: a mask image, or 'subtitles'")
    seq.add_argument("--no-motion", dest="motion", action="store_false",
                     help="do not roll later frames' canvases to follow the camera")
    _add_fit_options(seq)

    dseq = command("decode-seq", "decompress a .dips file to one image per frame",
                   "Decompress a .dips file to OUTDIR/frame000.png, frame001.png, ... (the extension is --format's). "
                   "Frames of that name already in OUTDIR are refused; with --force they are replaced, and those "
                   "left over from a longer clip (frame007.png after a 3-frame clip) are removed.")
    dseq.add_argument("input", metavar="IN", help="the .dips file")
    dseq.add_argument("outdir", metavar="OUTDIR", help="folder for frame000.png, frame001.png, ... (made if missing)")
    dseq.add_argument("--format", default="png", help="image extension of the frames, such as png or .png "
                                                      "(default: %(default)s)")
    dseq.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    dseq.add_argument("--force", action="store_true",
                      help="replace frames in OUTDIR; remove frameNNN files of the extension past the clip's end")
    dseq.add_argument("--base", metavar="PATH", help="the .dipbase file the key frames need, if not a shipped one")

    res = command("restore", "inpaint, super-resolve or denoise an image (no .dip file)",
                  "Inpaint, super-resolve or denoise an image by fitting networks to it, and write the result as "
                  "an image (no .dip file). The fits take minutes on a CPU.")
    res.add_argument("mode", choices=("inpaint", "sr", "denoise"))
    res.add_argument("input", metavar="IN", help="any image Pillow reads (- for standard input)")
    res.add_argument("output", metavar="OUT", help="image to write; the format follows the extension; - for PNG on "
                     "standard output")
    res.add_argument("--mask", metavar="MASK", help="inpaint: mask image (non-zero = missing) or 'subtitles'")
    res.add_argument("--factor", type=int, metavar="N", help="sr: the factor (default 4)")
    _add_fit_options(res)

    msk = command("mask", "find what to inpaint (burned-in subtitles) and write it as a mask image",
                  "Find burned-in subtitles in an image and write where they are as a mask image (255 = missing), "
                  "for encode --mask or restore inpaint --mask.")
    msk.add_argument("--subtitles", action="store_true", required=True, help="find burned-in subtitles")
    msk.add_argument("input", metavar="IN", help="any image Pillow reads")
    msk.add_argument("-o", "--output", metavar="MASK", required=True, help="mask image to write (255 = missing)")
    msk.add_argument("--force", action="store_true", help="overwrite MASK if it exists")

    tb = command("train-base", "meta-learn a base model from a folder of images",
                 "Meta-learn a base model (a .dipbase file for encode --base) from a folder of images. Training "
                 "runs many fits: hours on a CPU; a broken run continues with --resume.")
    tb.add_argument("dir", metavar="DIR", help="folder of training images (never the benchmark's)")
    tb.add_argument("-o", "--output", metavar="FILE", required=True, help="the .dipbase file to write")
    tb.add_argument("--arch", type=int, default=67, metavar="K",
                    help="width of the encoder's network to train for (default %(default)s: 0.25 bpp on 768x512)")
    tb.add_argument("--for", dest="purpose", choices=("compress", "restore"), default="compress",
                    help="the network of plain compression (sines) or of inpainting (ReLUs)")
    tb.add_argument("--steps", type=int, default=200, help="outer (Reptile) steps (default %(default)s)")
    tb.add_argument("--inner", type=int, default=32, help="iterations of each inner fit (default %(default)s)")
    tb.add_argument("--tasks", type=int, default=4, help="inner fits per outer step (default %(default)s)")
    tb.add_argument("--inner-beta2", type=float, metavar="B",
                    help="Adam's beta2 in the inner fits (default: MetaSchedule's, 0.999)")
    tb.add_argument("--crop", type=int, default=192, help="side of the training crops (default %(default)s)")
    tb.add_argument("--grayscale", action="store_true", help="train for grayscale images")
    tb.add_argument("--resume", action="store_true", help="continue from FILE.partial, the checkpoint of a broken run")
    tb.add_argument("--seed", type=int, default=0, help="seed of the initialization and the sampling (default 0)")
    tb.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    tb.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    tb.add_argument("--quiet", action="store_true", help="no progress bar")

    # Defaults spelled out, so that building the parser imports no evaluation code;
    # tests/test_eval_cli.py checks them against dipcodec.evaluation.run.
    ev = command("eval", "rate-distortion evaluation against JPEG, WebP, JPEG 2000 and AVIF",
                 "Rate-distortion evaluation of dipcodec against JPEG, WebP, JPEG 2000 and AVIF on a folder of "
                 "images, with a report. Every image at every rate is an encode: hours on a CPU; a rerun resumes.")
    ev.add_argument("dir", metavar="DIR", help="folder of images (file names without extension name them)")
    ev.add_argument("--out", metavar="DIR", help="output folder, reused to resume (default: eval-NAME, NAME of DIR)")
    ev.add_argument("--codecs", default="dipcodec,jpeg,webp,jpeg2000,avif",
                    help="comma-separated (default: %(default)s)")
    ev.add_argument("--bpp", default="0.1,0.25,0.5,0.75,1.0", help="target rates (default: %(default)s)")
    ev.add_argument("--preset", choices=PRESET_NAMES, default="default",
                    help="dipcodec's encoder effort (default: %(default)s)")
    ev.add_argument("--images", metavar="NAMES", help="comma-separated image names, or kodak6")
    ev.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    ev.add_argument("--jobs", type=int, default=1, metavar="N", help="parallel processes (default 1)")
    ev.add_argument("--device", default="cpu", help="dipcodec's device: cpu or cuda (default cpu)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    return p


def _read_file(path: str) -> bytes:
    """A dipcodec file's bytes, reading no more than any valid file of its kind can hold (so
    /dev/zero is refused): MAX_SEQUENCE_BYTES for a sequence, MAX_FILE_BYTES for the rest."""
    from .container import MAX_FILE_BYTES
    from .transfer.sequence import MAX_SEQUENCE_BYTES, SEQUENCE_MAGIC

    try:
        with open(path, "rb") as f:
            head = f.read(len(SEQUENCE_MAGIC))
            limit = MAX_SEQUENCE_BYTES if head == SEQUENCE_MAGIC else MAX_FILE_BYTES
            data = head + f.read(limit + 1 - len(head))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{path}: larger than any dipcodec {'sequence' if head == SEQUENCE_MAGIC else 'file'} can be")
    return data


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """Name the file in the decode errors raised inside, as gzip does (``FILE: message``), with the
    option that fixes a missing base model."""
    try:
        yield
    except DecodeError as exc:
        hint = " (give it with --base PATH)" if isinstance(exc, MissingBaseError) else ""
        raise DecodeError(f"{path}: {exc}{hint}") from None


def _check_kind(path: str, data: bytes, *, sequence: bool) -> None:
    """Name the command that reads a file given to the wrong one (the parsers would say 'bad magic')."""
    from .container import MAGIC
    from .transfer.basefile import BASE_MAGIC
    from .transfer.sequence import is_sequence

    if data[:4] == BASE_MAGIC:
        raise InputError(f"{path} is a base model (.dipbase): it holds no image (see dipcodec info)")
    if is_sequence(data) and not sequence:
        raise InputError(f"{path} is a sequence: use decode-seq")
    if data[:4] == MAGIC and sequence:
        raise InputError(f"{path} is a single image: use decode")


STDIO = "-"
"""IN or OUT as ``-``: standard input or output, as cjpeg and gzip take them."""


def _source(name: str) -> str:
    """The path to read IN from: ``-`` is standard input."""
    return "/dev/stdin" if name == STDIO else name


def _write_stdout(data: bytes) -> None:
    """OUT ``-``: the bytes to standard output, which must not be a terminal (as gzip refuses)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _check_output(dst: str, force: bool, *sources: str) -> None:
    """Refuse bad outputs before any slow work: an input itself, an existing file without --force, a
    directory or a device, a missing or read-only folder (:func:`dipcodec.images.output_target`); for
    ``-``, a terminal."""
    from .images import output_target

    if dst == STDIO:
        if sys.stdout.isatty():
            raise InputError("refusing to write binary data to a terminal (redirect standard output)")
        return
    if Path(dst).exists() and any(Path(src).exists() and os.path.samefile(src, dst) for src in sources):
        raise InputError(f"{dst}: output is the input file")
    output_target(dst, force=force)


def _check_folder(folder: Path) -> None:
    """Before any slow work: ``folder`` is a writable folder, or its nearest existing ancestor is
    one, where it can be made."""
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{folder} is not a folder" if ancestor == folder else f"{folder}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: cannot write in folder {ancestor} (permission denied)")


def _image_format_named(path: str | os.PathLike) -> str | None:
    """The image format Pillow knows by ``path``'s extension, if any (dipcodec's own is none)."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    return None if fmt == "DIPCODEC" else fmt


def _check_image_output(path: str | os.PathLike, command: str, channels: int | None = None) -> None:
    """Before any slow work: OUT must name an image format Pillow writes (for ``channels``, if known)."""
    from .images import image_format

    if str(path) == STDIO:
        return  # standard output gets PNG, which takes every image dipcodec makes
    if _image_format_named(path) is None:
        raise InputError(f"{path}: {command} writes an image; choose an image extension such as .png")
    image_format(path, channels)


def _warn_image_extension(path: str) -> None:
    """``encode in.png out.png`` writes a .dip file all the same: say so before the fit, not after."""
    if path != STDIO and (fmt := _image_format_named(path)):
        warn(f"{path}: encode writes a .dip file, not a {fmt} image; name it {Path(path).with_suffix('.dip').name}")


def _stderr_is_terminal() -> bool:
    """Progress bars only on a terminal: in a log file (``2> log``) their \\r frames are noise."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


class _ProgressBar:
    """The fit's progress bar (iteration, current PSNR, ETA) on stderr, if it is a terminal; opened at
    the first report."""

    def __init__(self) -> None:
        self.bar = None
        self.enabled = _stderr_is_terminal()

    def __call__(self, done: int, total: int, psnr: float) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.bar is None:
            # tqdm puts ", " before the postfix: inside the brackets it separates, as in tqdm's own format.
            self.bar = tqdm(total=total, desc="fitting", unit="it", leave=False, file=sys.stderr,
                            bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.bar.total = max(self.bar.total, total)  # rate control may add a short tuning phase
        self.bar.update(done - self.bar.n)
        if done % 10 == 0 or done == total:
            self.bar.set_postfix_str(f"PSNR {psnr:.2f} dB", refresh=False)

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar; the next report opens a fresh one (a sequence's next frame)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _mask_argument(value: str | None):
    """``--mask``: 'subtitles', or a mask image read like any input."""
    from .images import read_image

    return value if value in (None, "subtitles") else read_image(value)


def _encode(args: argparse.Namespace) -> None:
    from .encoder import encode_detailed
    from .images import read_image, write_atomic
    from .restoration.modes import restoration_for

    _check_output(args.output, args.force, args.input)
    _warn_image_extension(args.output)
    pixels = read_image(_source(args.input))
    restoration = restoration_for(pixels, mask=_mask_argument(args.mask), sr=args.sr, denoise=args.denoise)
    start = time.perf_counter()
    with _ProgressBar() as bar:
        result = encode_detailed(pixels, bpp=args.bpp, quality=args.quality, preset=args.preset, seed=args.seed,
                                 device=args.device, progress=None if args.quiet else bar, restoration=restoration,
                                 base=args.base)
    if args.output == STDIO:
        _write_stdout(result.data)
    else:
        write_atomic(args.output, result.data, force=args.force)
    if not args.quiet:
        h, w = result.pixels.shape[:2]
        fidelity = "" if restoration is None else f" ({restoration.mode}: to the input as the fit sees it)"
        print(f"{args.output}: {len(result.data)} bytes, {8 * len(result.data) / (h * w):.4f} bpp, "
              f"PSNR {result.psnr:.2f} dB{fidelity}, {time.perf_counter() - start:.1f} s", file=sys.stderr)


def _decode(args: argparse.Namespace) -> None:
    from .decoder import decode, info
    from .images import image_bytes, write_image

    _check_output(args.output, args.force, args.input)
    _check_image_output(args.output, "decode")
    data = _read_file(_source(args.input))
    with _naming(args.input):
        _check_kind(args.input, data, sequence=False)
        _check_image_output(args.output, "decode", info(data)["channels"])
        pixels = decode(data, device=args.device, scale=args.scale, base=args.base)
    if args.output == STDIO:
        _write_stdout(image_bytes(STDIO, pixels, "PNG"))  # standard output gets PNG
    else:
        write_image(args.output, pixels, force=args.force)


def _encode_seq(args: argparse.Namespace) -> None:
    from .images import read_image, write_atomic
    from .transfer.warmstart import encode_sequence

    _check_output(args.output, args.force, *args.frames)
    if Path(args.output).suffix.lower() != ".dips":
        raise InputError(f"{args.output}: a sequence is written to a .dips file")
    frames = [read_image(f) for f in args.frames]
    mask = _mask_argument(args.mask)
    start = time.perf_counter()

    def report(index: int, result, seconds: float) -> None:
        bar.close()
        if not args.quiet:
            h, w = result.pixels.shape[:2]
            print(f"frame {index + 1}/{len(frames)}: {len(result.data)} bytes, "
                  f"{8 * len(result.data) / (h * w):.4f} bpp, PSNR {result.psnr:.2f} dB, {seconds:.1f} s",
                  file=sys.stderr)

    with _ProgressBar() as bar:
        data = encode_sequence(frames, bpp=args.bpp, quality=args.quality, preset=args.preset, seed=args.seed,
                               device=args.device, keyint=args.keyint, average=args.average, base=args.base,
                               mask=mask, motion=args.motion, progress=None if args.quiet else bar, on_frame=report)
    write_atomic(args.output, data, force=args.force)
    if not args.quiet:
        h, w = frames[0].shape[:2]
        print(f"{args.output}: {len(frames)} frames, {len(data)} bytes, "
              f"{8 * len(data) / (h * w * len(frames)):.4f} bpp, {time.perf_counter() - start:.1f} s", file=sys.stderr)


def _frame_files(folder: Path, extension: str) -> list[Path]:
    """What decode-seq writes, or wrote for an earlier clip, in ``folder``: frameNNN.EXTENSION."""
    pattern = re.compile(rf"frame\d{{3,}}\.{re.escape(extension)}")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


def _decode_seq(args: argparse.Namespace) -> None:
    import shutil
    import tempfile

    from .images import output_target, write_image
    from .transfer.sequence import iter_sequence, sequence_info

    extension = args.format.removeprefix(".")
    if not extension.isalnum():
        raise InputError(f"--format {args.format!r}: give an image extension such as png")
    outdir = Path(args.outdir)
    probe = outdir / f"frame000.{extension}"
    _check_image_output(probe, "decode-seq")
    _check_folder(outdir)
    data = _read_file(args.input)
    with _naming(args.input):
        _check_kind(args.input, data, sequence=True)
        details = sequence_info(data)
        for channels in sorted({frame["channels"] for frame in details["frame_info"]}):
            _check_image_output(probe, "decode-seq", channels)
        names = [outdir / f"frame{i:03d}.{extension}" for i in range(details["frames"])]
        old = _frame_files(outdir, extension)
        if old and not args.force:
            raise InputError(f"{old[0]} exists (use --force to replace the frames in {outdir})")
        for name in names:
            if os.path.lexists(name):
                output_target(name, force=True)  # a folder or a device of that name is refused
        made = not outdir.exists()
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".decode-seq-", dir=outdir))
        except OSError as exc:
            raise InputError(f"cannot make folder {outdir}: {exc.strerror or exc}") from None
        # Frames stream through a hidden folder (a long clip needs the memory of one frame) and move
        # into place only when every frame has decoded: a damaged frame leaves no partial clip.
        try:
            for name, pixels in zip(names, iter_sequence(data, device=args.device, base=args.base)):
                write_image(partial / name.name, pixels, force=True)
            for name in names:
                os.replace(partial / name.name, name)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            if made:
                shutil.rmtree(outdir, ignore_errors=True)
            raise
        partial.rmdir()
    for stale in old:
        if stale not in names and stale.is_file():
            try:
                stale.unlink()
            except OSError as exc:
                raise InputError(f"cannot remove {stale}, a frame of an earlier clip: {exc.strerror or exc}") from None


def _train_base(args: argparse.Namespace) -> None:
    from .layout import MAX_WIDTH
    from .images import output_target
    from .transfer.basefile import save_base
    from .transfer.meta import MetaSchedule, standard_network, train_base, training_images

    out = Path(args.output)
    if not Path(args.dir).is_dir():
        raise InputError(f"{args.dir} is not a folder")
    output_target(out, force=args.force)
    if not 4 <= args.arch <= MAX_WIDTH or min(args.steps, args.inner, args.tasks) < 1 or args.crop < 64:
        raise InputError(f"--arch must be 4 to {MAX_WIDTH}, --steps, --inner and --tasks positive, --crop 64 or more")
    if args.inner_beta2 is not None and not 0 <= args.inner_beta2 < 1:
        raise InputError("--inner-beta2 must be in [0, 1)")
    images = training_images(args.dir, grayscale=args.grayscale)
    network = standard_network(args.arch, 1 if args.grayscale else 3, args.purpose)
    checkpoint = out.with_name(out.name + ".partial")
    if checkpoint.exists() and not args.resume:
        raise InputError(f"{checkpoint} holds a broken run: continue it with --resume, or remove it")
    schedule = MetaSchedule(steps=args.steps, inner_iterations=args.inner, tasks_per_step=args.tasks, crop=args.crop)
    if args.inner_beta2 is not None:
        schedule = dataclasses.replace(schedule, inner_adam_beta2=args.inner_beta2)
    bar = None
    if not args.quiet and _stderr_is_terminal():
        from tqdm import tqdm

        bar = tqdm(total=args.steps, desc="training", unit="step", file=sys.stderr)

    def progress(done: int, total: int, psnr: float) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(f"inner fit {psnr:.2f} dB", refresh=False)

    try:
        base = train_base(images, network, schedule, seed=args.seed, device=args.device,
                          progress=progress if bar else None, checkpoint=checkpoint, resume=args.resume)
    finally:
        if bar:
            bar.close()
    save_base(base, out, force=args.force)
    checkpoint.unlink(missing_ok=True)
    if not args.quiet:
        print(f"{out}: base model {base.name}, {network.parameter_count()} weights, network widths "
              f"{list(network.channels)}", file=sys.stderr)


def _mask(args: argparse.Namespace) -> None:
    import numpy as np

    from .images import read_image, write_image
    from .restoration.subtitles import subtitle_mask

    _check_output(args.output, args.force, args.input)
    _check_image_output(args.output, "mask", 1)
    found = subtitle_mask(read_image(args.input))
    write_image(args.output, np.where(found, 255, 0).astype(np.uint8), force=args.force)


def _restore(args: argparse.Namespace) -> None:
    from .images import image_bytes, read_image, write_image
    from .restoration.restore import restore

    _check_output(args.output, args.force, args.input)
    _check_image_output(args.output, "restore")
    if (args.mask is not None) != (args.mode == "inpaint"):
        raise InputError("--mask goes with inpaint, and inpaint needs it")
    if args.factor is not None and args.mode != "sr":
        raise InputError("--factor goes with sr only")
    pixels = read_image(_source(args.input))
    _check_image_output(args.output, "restore", 1 if pixels.ndim == 2 else 3)
    mode = {"sr": "super-resolution"}.get(args.mode, args.mode)
    with _ProgressBar() as bar:
        restored = restore(pixels, mode, mask=_mask_argument(args.mask), factor=args.factor, preset=args.preset,
                           seed=args.seed, device=args.device, progress=None if args.quiet else bar)
    if args.output == STDIO:
        _write_stdout(image_bytes(STDIO, restored, "PNG"))
    else:
        write_image(args.output, restored, force=args.force)


def _info(args: argparse.Namespace) -> None:
    with _naming(args.file):
        _describe(args, _read_file(_source(args.file)))


def _describe(args: argparse.Namespace, data: bytes) -> None:
    """``info``'s output for a base model, a sequence or a .dip file."""
    from .decoder import info
    from .transfer.basefile import BASE_MAGIC, base_from_bytes
    from .transfer.sequence import is_sequence, sequence_info

    if data[:len(BASE_MAGIC)] == BASE_MAGIC:
        base = base_from_bytes(data)
        details = {"base_id": base.name, "channels": list(base.network.channels),
                   "input_channels": base.network.input_channels, "parameters": base.network.parameter_count(),
                   "info": base.info}
        print(json.dumps(details, indent=2) if args.json else
              f"{args.file}: dipcodec base model {base.name}, network widths {details['channels']}, "
              f"{details['parameters']} weights, trained by {base.info.get('method', 'unknown')} "
              f"for {base.info.get('step', '?')} steps")
        return
    if is_sequence(data):
        details = sequence_info(data)
        if args.json:
            print(json.dumps(details, indent=2))
            return
        print(f"{args.file}: dipcodec sequence {details['sequence_version']}, {details['frames']} frames, "
              f"{details['file_bytes']} bytes, {details['bpp']:.4f} bpp; averaging window {details['average']}")
        for index, frame in enumerate(details["frame_info"]):
            print(f"  frame {index:3d}  {frame['file_bytes']:7d} bytes  {frame['bpp']:.4f} bpp  "
                  f"{frame['width']}x{frame['height']}  mode {frame['mode']}  reference {frame['reference']}"
                  + (f" {frame['base_id']}" if frame["base_id"] else "")
                  + ("  canvas offset {},{}".format(*frame["canvas_offset"]) if any(frame["canvas_offset"]) else ""))
        return
    details = info(data)
    if args.json:
        print(json.dumps(details, indent=2))
        return
    arch = details["architecture"]
    lines = [
        f"{args.file}: dipcodec format {details['format_version']}, {details['file_bytes']} bytes",
        f"  image        {details['width']}x{details['height']}, {details['channels']} channel(s), mode {details['mode']}"
        + (f" (fitted at 1/{details['scale']} size)" if details["scale"] > 1 else ""),
        f"  network      {len(arch['channels'])} stages of widths {arch['channels']}, kernels {arch['kernel_sizes']}, "
        f"shuffle {arch['shuffle']}, {arch['upsample']} upsampling, {arch['activation']}",
        f"  parameters   {details['parameters']}",
        "  post-filter  " + (f"{pf['taps']}x{pf['taps']} taps per channel" + _filter_classes(pf)
                             + f", coefficients in units of 2^-{pf['precision']}" if (pf := details["post_filter"]) else "none"),
        f"  reference    {details['reference']}" + (f" {details['base_id']}" if details["base_id"] else "")
        + f", seed {details['seed']}",
        "  sections     " + ", ".join(f"{k} {v} B" for k, v in details["section_bytes"].items()),
        f"  rate         {details['bits_per_weight']:.3f} bits/weight, {details['bpp']:.4f} bpp",
    ]
    print("\n".join(lines))


def _filter_classes(post_filter: dict) -> str:
    """How a post-filter's classes read in ``info``: nothing for one class."""
    parts = ["4 phases"] if post_filter["phases"] > 1 else []
    if post_filter["thresholds"]:
        thresholds = ", ".join(map(str, post_filter["thresholds"]))
        parts.append(f"{len(post_filter['thresholds']) + 1} activity bands, thresholds {thresholds}")
    return f" and class ({' x '.join(parts)})" if parts else ""


def _eval(args: argparse.Namespace) -> None:
    from .evaluation.run import EvalConfig, evaluate, parse_codecs, parse_images, parse_targets

    source = Path(args.dir)
    out = Path(args.out) if args.out else Path(f"eval-{source.resolve().name or 'images'}")
    config = EvalConfig(source=source, out=out, codecs=parse_codecs(args.codecs), targets=parse_targets(args.bpp),
                        preset=args.preset, images=parse_images(args.images), limit=args.limit, jobs=args.jobs,
                        device=args.device, quiet=args.quiet)
    results = evaluate(config)
    if not args.quiet:
        warned = sum(bool(r.get("warnings")) for r in results.points.values())
        print(f"{out / 'report.md'}: {len(results.images)} images, {results.computed} results computed, "
              f"{results.cached} from the cache" + (f", {warned} with encoder warnings (listed in the report)"
                                                   if warned else ""), file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at the null device, so that Python's own flush at exit does not hit the closed
    pipe again (and print a traceback of its own)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor behind stdout: nothing to do
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status instead of exiting, so tests can call it."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help/--version
        return int(exc.code or 0)
    handler = {"encode": _encode, "decode": _decode, "info": _info, "eval": _eval, "mask": _mask,
               "restore": _restore, "encode-seq": _encode_seq, "decode-seq": _decode_seq,
               "train-base": _train_base}[args.command]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # Warnings are printed as they come, so they precede a later error line (restored after the block).
        warnings.showwarning = _warning_printer()
        try:
            handler(args)
            status = 0
        except DipcodecError as exc:
            print(f"dipcodec: error: {exc}", file=sys.stderr)
            status = 2
        except KeyboardInterrupt:
            print("dipcodec: interrupted", file=sys.stderr)
            status = 130
        except BrokenPipeError:  # the reader left (`dipcodec info x.dip | head`): stop quietly, as cat does
            _silence_stdout()
            status = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
        except Exception as exc:  # noqa: BLE001 - the promise is one line, never a traceback
            if os.environ.get("DIPCODEC_DEBUG"):
                raise
            print(f"dipcodec: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = 1
    return status


def _warning_printer() -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each DipcodecWarning once, as one line, when it is
    issued (before a later error line, and without tearing a progress bar); others are dropped."""
    seen = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if not issubclass(category, DipcodecWarning) or text in seen:
            return
        seen.add(text)
        if "tqdm" in sys.modules:  # a bar may be open: tqdm clears it, prints, and redraws it
            sys.modules["tqdm"].tqdm.write(f"dipcodec: warning: {text}", file=sys.stderr)
        else:
            print(f"dipcodec: warning: {text}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
