"""Shared fixtures: paths to the recorded official reference data and small models."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

from vidtwin.precision import cpu_has_native_bf16 as real_cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
OFFICIAL_CKPT = DATA / "tiny_official.ckpt"
OFFICIAL_CONFIG = DATA / "tiny_official_config.yaml"
OFFICIAL_IO = DATA / "tiny_io.safetensors"
TINY_CONFIG = REPO / "configs" / "tiny.yaml"
# Frames per clip of configs/tiny.yaml, which the tests' videos and tensors are shaped for.
TINY_FRAMES = 4
PUBLISHED_CONFIG = REPO / "configs" / "vidtwin.yaml"


NEEDS_ROOT_TO_MOUNT = "mounting a tmpfs needs root (CAP_SYS_ADMIN): run the tests as root to cover this case"
NEEDS_ROOT_FOR_CHATTR = ("making a folder immutable (chattr +i) needs root and a filesystem with that attribute: "
                         "run the tests as root to cover this case")


def mount_tmpfs(folder: Path, size: str, read_only: bool = False) -> bool:
    """Mount a tmpfs of ``size`` (e.g. "16k") on a new ``folder``; False where mounting is not allowed."""
    folder.mkdir()
    options = f"ro,size={size}" if read_only else f"size={size}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted on a new ``folder`` for the block: a disk that fills up for real
    (or refuses every write, ``read_only``). Skips the test where mounting is not allowed."""
    if not mount_tmpfs(folder, size, read_only):
        pytest.skip(NEEDS_ROOT_TO_MOUNT)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    """A full 1 MiB tmpfs: every write fails with ENOSPC, as on a full disk (needs mount rights)."""
    with small_tmpfs(tmp_path / "full", "1m") as folder:
        try:
            with open(folder / "filler", "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass
        yield folder


@contextlib.contextmanager
def immutable_folder(folder: Path):
    """``folder`` made immutable for the block (``chattr +i``): even root cannot write into it, where
    a read-only mode would not stop root. Skips the test where the attribute cannot be set."""
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip(NEEDS_ROOT_FOR_CHATTR)
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@torch.no_grad()
def outputs_in_official_layout(model, x, x2) -> dict:
    """Every tensor the official recording holds, computed by our model, in the official layouts."""
    from vidtwin import VidTwinLatents

    latents, other = model.encode(x), model.encode(x2)
    return {
        "z": model.encoder(x),
        "z_structure": latents.structure.permute(0, 2, 3, 4, 1),  # (B, d, Q, h, w) -> official (B, Q, h, w, d)
        "z_dynamics_x": latents.dynamics_x,
        "z_dynamics_y": latents.dynamics_y,
        "dec": model.decode(latents),
        "dec_structure_only": model.decode(latents, only="structure"),
        "dec_dynamics_only": model.decode(latents, only="dynamics"),
        "dec_cross": model.decode(VidTwinLatents(latents.structure, other.dynamics_x, other.dynamics_y)),
        "kl_loss": latents.kl.reshape(1),
    }


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# What the CPU reports decides what dtype="auto" runs: bf16 where the CPU has native bf16
# instructions, fp32 elsewhere. Tests that compare default-dtype runs at fp32 tolerances would then
# pass on one machine and fail on the next, so every test sees a CPU without native bf16, except
# those marked cpu_dtype_choice, which test that choice with the capabilities they stub.
def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_dtype_choice: tests what dtype='auto' picks on each CPU; sees the real "
                                       "(or VIDTWIN_TEST_CPU_BF16-forced) capabilities instead of a bf16-less CPU")


@pytest.fixture(scope="session", autouse=True)
def _forced_cpu_capabilities():
    """VIDTWIN_TEST_CPU_BF16=native|none makes torch report a CPU with or without native bf16 for the
    whole run, so that one machine can show that the suite passes on both kinds of CPU. Processes
    that a test starts see the real CPU; export ATEN_CPU_CAPABILITY=avx2 as well to make them
    (and this process) run as on a CPU without AVX-512."""
    forced = os.environ.get("VIDTWIN_TEST_CPU_BF16", "")
    if not forced:
        yield
        return
    if forced not in ("native", "none"):
        raise pytest.UsageError(f"VIDTWIN_TEST_CPU_BF16 must be 'native' or 'none', not {forced!r}")
    native = forced == "native"
    real_capabilities = torch.cpu.get_capabilities()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cpu, "get_capabilities",
                      lambda: {**real_capabilities, "avx512_bf16": native, "amx_bf16": native})
        patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if native else "AVX2")
        if native:  # a CPU whose native bf16 is also the faster precision, as on an AMD EPYC (about 2x)
            from vidtwin import precision

            patch.setattr(precision, "cpu_bf16_matmul_speedup", lambda: 2.1)
        yield


@pytest.fixture(scope="session", autouse=True)
def _cpu_without_native_bf16(_forced_cpu_capabilities):
    """Session-wide, so that module-scoped fixtures (datasets encoded once for a module) see the
    same CPU as their tests."""
    from vidtwin import precision  # the one detector, which inference and training both use

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        yield


@pytest.fixture(autouse=True)
def _real_bf16_detection_for_the_dtype_choice(request, monkeypatch):
    if request.node.get_closest_marker("cpu_dtype_choice") is not None:
        from vidtwin import precision

        monkeypatch.setattr(precision, "cpu_has_native_bf16", real_cpu_has_native_bf16)
    yield


# A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module with one intra-op thread, then restore the previous setting.

    On a 2-core machine that also runs other work, two OpenMP threads stall on each other's
    barriers: small ops became 30-80x slower. One thread keeps these tests fast and their timing
    stable; the code under test is the same. NumPy's BLAS threads spin the same way (the FVD's
    400x400 eigendecompositions took 3-15 s instead of 0.1 s), so they are capped too where
    threadpoolctl is installed.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with contextlib.ExitStack() as limits:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            limits.enter_context(threadpool_limits(limits=1, user_api="blas"))
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache without the VGG16 file, so that LPIPS cannot find ImageNet weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def official_model():
    from vidtwin import load_model

    return load_model(OFFICIAL_CONFIG, OFFICIAL_CKPT)


@pytest.fixture
def tiny_model():
    from vidtwin import load_model

    return load_model(TINY_CONFIG)


@pytest.fixture(scope="session")
def labelled_latents(tmp_path_factory) -> Path:
    """A folder with ``tiny.pt`` (the tiny config's weights at seed 0) and ``latents/``, a labelled
    latent dataset of that autoencoder (generation_helpers.write_labelled_dataset): written once for
    the generator's training and sampling tests, which only read it (copy it to change it)."""
    from vidtwin import load_model
    from generation_helpers import write_labelled_dataset

    root = tmp_path_factory.mktemp("labelled_latents")
    with torch.random.fork_rng():  # the session fixture leaves the tests' random state alone
        torch.manual_seed(0)
        torch.save(load_model(TINY_CONFIG).state_dict(), root / "tiny.pt")
    write_labelled_dataset(root / "latents", root / "tiny.pt")
    return root


def rotated_copy(source: Path, target: Path, degrees: int, hflip: bool = False) -> Path:
    """A copy of the MP4 ``source`` whose display matrix shows it turned ``degrees`` counter-clockwise
    (then mirrored left-right with ``hflip``), as phones record portrait videos.

    The frames stay as stored: only the track header's matrix changes, as FFmpeg's muxer writes it
    (16.16 fixed point, big-endian), so any PyAV version can make it.
    """
    import math
    import struct

    data = bytearray(Path(source).read_bytes())
    box = data.index(b"tkhd")
    matrix_at = box + 4 + (40 if data[box + 4] == 0 else 52)  # after version, flags, times, ids, layer, volume
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    a, b, c, d = cos, -sin, sin, cos  # FFmpeg's counter-clockwise rotation
    if hflip:
        a, c = -a, -c
    matrix = [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30]
    data[matrix_at:matrix_at + 36] = struct.pack(">9i", *matrix)
    Path(target).write_bytes(bytes(data))
    return Path(target)
