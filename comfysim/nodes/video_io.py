"""ComfyUI's video file nodes (comfy_extras/nodes_video.py): CreateVideo joins an IMAGE batch
(and optional AUDIO) into a VIDEO, SaveVideo writes it as a real H.264 MP4 that browsers play.

The encoder is PyAV (FFmpeg in its wheel), which is also what ComfyUI itself uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..files import save_image_path
from .base import Result, RunContext, node

#: The simulator favours encoding speed; ComfyUI keeps FFmpeg's default preset.
X264_PRESET = "veryfast"


@dataclass(frozen=True)
class Video:
    """ComfyUI's VideoFromComponents: frames ``[N, H, W, 3]`` in 0..1, a frame rate, audio."""

    images: np.ndarray
    frame_rate: Fraction
    audio: dict[str, Any] | None = None


@node("CreateVideo")
def create_video(ctx: RunContext, images: np.ndarray, fps: float, audio: dict[str, Any] | None = None) -> tuple[Video]:
    return (Video(images=images, frame_rate=Fraction(fps).limit_denominator(1000), audio=audio),)


@node("SaveVideo", hidden=("prompt", "extra_pnginfo"))
def save_video(ctx: RunContext, video: Video, filename_prefix: str = "video/ComfyUI", format: str = "auto",
               codec: str = "auto") -> Result:
    height, width = video.images.shape[1:3]
    folder, stem, counter, subfolder = save_image_path(filename_prefix, ctx.folders.output, width, height)
    filename = f"{stem}_{counter:05}_.mp4"  # "auto" and "mp4" are both MP4 with H.264
    metadata = dict(ctx.extra_data.get("extra_pnginfo") or {})
    metadata["prompt"] = ctx.prompt
    write_mp4(folder / filename, video, metadata={key: json.dumps(value) for key, value in metadata.items()})
    # ui.PreviewVideo: the same shape as an animated picture's.
    return Result(ui={"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]})


def write_mp4(path: Path, video: Video, *, metadata: dict[str, str] | None = None) -> None:
    """Frames (and audio, if any) as an MP4: H.264 in yuv420p (even sizes), AAC sound."""
    import av  # imported here: only video workflows need FFmpeg loaded

    frames = np.clip(video.images[..., :3] * 255.0, 0, 255).astype(np.uint8)
    # yuv420p halves the chroma planes, so H.264 needs even dimensions.
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    # MP4 keeps free-form tags (the graph) only with this flag, as ComfyUI sets it.
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        for key, value in (metadata or {}).items():
            container.metadata[key] = value
        stream = container.add_stream("libx264", rate=video.frame_rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": X264_PRESET, "crf": "23"}
        sound = None
        if video.audio is not None:
            rate = int(video.audio["sample_rate"])
            sound = container.add_stream("aac", rate=rate, layout="stereo")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        container.mux(stream.encode())
        if sound is not None:
            _mux_audio(container, sound, video.audio)


def _mux_audio(container: Any, stream: Any, audio: dict[str, Any]) -> None:
    import av

    waveform = np.asarray(audio["waveform"][0], dtype=np.float32)  # [channels, samples]
    if waveform.shape[0] == 1:
        waveform = np.repeat(waveform, 2, axis=0)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform[:2]), format="fltp", layout="stereo")
    frame.sample_rate = int(audio["sample_rate"])
    for packet in stream.encode(frame):
        container.mux(packet)
    container.mux(stream.encode())
