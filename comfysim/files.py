"""The node's input/, output/ and temp/ folders and ComfyUI's rules for naming files in them.

Path rules follow ComfyUI's folder_paths.py: annotated names (``x.png [output]``), the
``name (1).png`` renaming of uploads, and the ``<prefix>_<counter>_.png`` numbering of saves.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
_ANNOTATION = re.compile(r"^(.*) \[(input|output|temp)\]$")


@dataclass(frozen=True)
class Folders:
    input: Path
    output: Path
    temp: Path

    @classmethod
    def under(cls, base: Path) -> Folders:
        """Create the three folders; temp/ is emptied like ComfyUI does at start-up."""
        folders = cls(base / "input", base / "output", base / "temp")
        shutil.rmtree(folders.temp, ignore_errors=True)
        for path in (folders.input, folders.output, folders.temp):
            path.mkdir(parents=True, exist_ok=True)
        return folders

    def by_type(self, kind: str) -> Path | None:
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def annotated(self, name: str, default: Path | None) -> tuple[str, Path | None]:
        """Split ``x.png [output]`` into the bare name and the folder it names."""
        match = _ANNOTATION.match(name)
        if match:
            return match.group(1), self.by_type(match.group(2)) or default
        return name, default

    def annotated_path(self, name: str, default: Path | None = None) -> Path:
        bare, base = self.annotated(name, default or self.input)
        return (base or self.input) / bare

    def input_images(self) -> list[str]:
        """What LoadImage's combo lists: top-level image files of input/, sorted."""
        return sorted(
            entry.name
            for entry in os.scandir(self.input)
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(base: Path, candidate: Path) -> bool:
    """ComfyUI's commonpath test: does ``candidate`` stay inside ``base``?"""
    base_abs = os.path.abspath(base)
    return os.path.commonpath((base_abs, os.path.abspath(candidate))) == base_abs


def upload_target(base: Path, subfolder: str, filename: str) -> Path | None:
    """Where an upload goes, or None when the name or subfolder escapes ``base`` (HTTP 400)."""
    folder = os.path.join(base, os.path.normpath(subfolder))
    target = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((os.path.abspath(base), target)) != os.path.abspath(base):
        return None
    return Path(target)


def choose_upload_name(target: Path, data: bytes, overwrite: bool) -> tuple[Path, bool]:
    """ComfyUI's no-overwrite rule: same bytes reuse the name, else ``name (1).ext`` ...

    Returns the path and whether the bytes still need writing.
    """
    if overwrite or not target.exists():
        return target, True
    digest = hashlib.sha256(data).hexdigest()
    stem, ext = os.path.splitext(target.name)
    candidate, i = target, 1
    while candidate.exists():
        if file_sha256(candidate) == digest:
            return candidate, False
        candidate = target.with_name(f"{stem} ({i}){ext}")
        i += 1
    return candidate, True


def save_image_path(prefix: str, output_dir: Path, width: int, height: int) -> tuple[Path, str, int, str]:
    """ComfyUI's get_save_image_path: (folder, file stem, next counter, subfolder).

    Raises the same bare ``Exception`` ComfyUI raises when the prefix escapes the folder.
    """
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    stem = os.path.basename(normalized)
    base = os.path.abspath(output_dir)
    folder = os.path.abspath(os.path.join(base, subfolder))
    common = os.path.commonpath((base, folder))
    if common != base:
        raise Exception(  # noqa: TRY002 - ComfyUI raises a bare Exception; clients see its name
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}\n         output_dir: {base}\n         commonpath: {common}"
        )
    os.makedirs(folder, exist_ok=True)
    counters = [0]
    for name in os.listdir(folder):
        if name[: len(stem)].lower() == stem.lower() and name[len(stem) : len(stem) + 1] == "_":
            digits = name[len(stem) + 1 :].split("_")[0]
            if digits.isdigit():
                counters.append(int(digits))
    return Path(folder), stem, max(counters) + 1, subfolder
