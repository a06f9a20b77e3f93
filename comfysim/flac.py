"""A minimal FLAC encoder (verbatim subframes), so SaveAudio writes a real .flac like ComfyUI.

Verbatim subframes store samples uncompressed; every FLAC decoder reads them. Only 16-bit
PCM and 1-8 channels are supported, which is what SaveAudio produces.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

BLOCK_SIZE = 4096
_SAMPLE_RATE_CODES = {44100: 0b1001, 48000: 0b1010, 32000: 0b1000, 96000: 0b1011}


def _crc_table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else (crc << 1)
        table.append(crc & mask)
    return table


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    table = _CRC16
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def _utf8_number(value: int) -> bytes:
    """FLAC's UTF-8-like coding of the frame number (no surrogate gaps, up to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    payload_bits = value.bit_length()
    count = 2
    while payload_bits > (6 * (count - 1) + (7 - count)):
        count += 1
    out = []
    for _ in range(count - 1):
        out.append(0x80 | (value & 0x3F))
        value >>= 6
    lead = ((0xFF << (8 - count)) & 0xFF) | value
    return bytes([lead] + out[::-1])


def write_flac(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write ``waveform`` ([channels, samples], floats in -1..1) as 16-bit FLAC."""
    channels, total = waveform.shape
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767.0).astype(">i2")
    rate_code = _SAMPLE_RATE_CODES.get(sample_rate, 0b0000)
    streaminfo = struct.pack(">HH", BLOCK_SIZE, BLOCK_SIZE) + b"\x00" * 6
    packed = (sample_rate << 44) | ((channels - 1) << 41) | (15 << 36) | total
    streaminfo += packed.to_bytes(8, "big") + b"\x00" * 16
    with open(path, "wb") as fh:
        fh.write(b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo)
        for number, start in enumerate(range(0, total, BLOCK_SIZE)):
            block = pcm[:, start : start + BLOCK_SIZE]
            header = bytes([0xFF, 0xF8, (0b0111 << 4) | rate_code, ((channels - 1) << 4) | (0b100 << 1)])
            header += _utf8_number(number) + struct.pack(">H", block.shape[1] - 1)
            if rate_code == 0:
                raise ValueError(f"unsupported sample rate {sample_rate}")
            frame = header + bytes([_crc8(header)])
            for channel in block:
                frame += b"\x02" + channel.tobytes()  # subframe header: VERBATIM, no wasted bits
            fh.write(frame + struct.pack(">H", _crc16(frame)))
