"""The shared libraries an ELF file links against (DT_NEEDED), read without a dependency."""

from __future__ import annotations

import struct
from pathlib import Path


def elf_needed(path: str | Path) -> list[str]:
    """The DT_NEEDED entries (shared libraries it links against) of a 64-bit little-endian ELF file.

    A few dozen lines instead of a dependency: only the dynamic section is read.

    Raises
    ------
    ValueError
        ``path`` is not a 64-bit little-endian ELF shared object.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1:  # PT_LOAD: maps file offsets to addresses
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []

    def offset_of(address: int) -> int:
        for vaddr, offset, size in loads:
            if vaddr <= address < vaddr + size:
                return address - vaddr + offset
        raise ValueError(f"{path}: address {address:#x} outside the loaded segments")

    needed, strtab = [], None
    for i in range(dynamic[1] // 16):
        tag, value = struct.unpack_from("<qQ", data, dynamic[0] + i * 16)
        if tag == 0:  # DT_NULL
            break
        if tag == 1:  # DT_NEEDED: offset into the string table
            needed.append(value)
        elif tag == 5:  # DT_STRTAB
            strtab = offset_of(value)
    if strtab is None:
        return []
    names = []
    for offset in needed:
        end = data.index(b"\0", strtab + offset)
        names.append(data[strtab + offset : end].decode())
    return names
