"""Readers of the file formats the open 3D model sources come in (``mesh_library``'s catalogs): Java ``.properties``
(Sweet Home 3D's catalogs), Java class files' text constants (its OBJ loader's built-in materials) and 0 A.D.'s PMD
meshes. Bytes or text in, plain values out; each raises ValueError for what it cannot read."""
from __future__ import annotations

import re
import struct

import numpy as np


def _unescape(s: str) -> str:
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda u: chr(int(u.group(1), 16)), s).replace("\\", "")


def read_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file (Sweet Home 3D catalogs): key=value lines, # comments, \\uXXXX escapes."""
    out, lines = {}, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):  # continuation
            i += 1
            line = line[:-1] + lines[i].strip()
        i += 1
        if not line or line[0] in "#!":
            continue
        m = re.match(r"((?:\\.|[^=:\s\\])+)\s*[=:\s]\s*(.*)", line)
        if m:
            out[_unescape(m.group(1))] = _unescape(m.group(2))
    return out


def class_strings(data: bytes) -> list[str]:
    """The text constants (CONSTANT_Utf8) of a Java class file's constant pool. Raises ValueError for anything
    else (Java's modified UTF-8 is read as UTF-8: an encoded NUL or surrogate pair becomes U+FFFD)."""
    if data[:4] != b"\xca\xfe\xba\xbe" or len(data) < 10:
        raise ValueError("not a Java class file")
    sizes = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 4, 15: 3, 16: 2, 17: 4, 18: 4, 19: 2, 20: 2}
    (count,), i, k, out = struct.unpack_from(">H", data, 8), 10, 1, []
    while k < count:
        tag = data[i] if i < len(data) else None
        if tag == 1 and i + 3 <= len(data):
            (n,) = struct.unpack_from(">H", data, i + 1)
            out.append(data[i + 3:i + 3 + n].decode("utf-8", "replace"))
            i += 3 + n
        elif tag in sizes:
            i += 1 + sizes[tag]
            k += tag in (5, 6)  # longs and doubles take two slots
        else:
            raise ValueError("truncated class file" if tag is None or tag == 1 else f"unknown constant tag {tag}")
        if i > len(data):
            raise ValueError("truncated class file")
        k += 1
    return out


def read_pmd(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(verts (V, 3), uv (V, 2), faces (F, 3)) of a 0 A.D. PMD mesh (version 3 or 4: a header, the vertices with
    position, normal, UV sets and bone weights, then 16-bit triangles; bones and prop points after are not read).
    Raises ValueError for anything else."""
    if len(data) < 20 or data[:4] != b"PSMD":
        raise ValueError("not a PMD mesh")
    version, _, n_verts = struct.unpack_from("<III", data, 4)
    offset, n_uv = 16, 1
    if version >= 4:
        (n_uv,), offset = struct.unpack_from("<I", data, offset), offset + 4
    if version not in (3, 4) or n_uv < 1:
        raise ValueError(f"unsupported PMD version {version} ({n_uv} UV sets)")
    stride = 24 + 8 * n_uv + 20  # position, normal, UVs, 4 bone indices (bytes) and 4 weights
    end = offset + n_verts * stride + 4
    if end > len(data):
        raise ValueError("truncated PMD mesh")
    rows = np.frombuffer(data, np.uint8, n_verts * stride, offset).reshape(n_verts, stride)
    verts = rows[:, :12].copy().view("<f4").astype(np.float64)
    uv = rows[:, 24:32].copy().view("<f4").astype(np.float64)
    (n_faces,) = struct.unpack_from("<I", data, end - 4)
    if end + 6 * n_faces > len(data):
        raise ValueError("truncated PMD mesh")
    faces = np.frombuffer(data, "<u2", 3 * n_faces, end).reshape(-1, 3).astype(np.int64)
    if n_faces and faces.max() >= n_verts:
        raise ValueError("PMD face indices out of range")
    return verts, uv, faces
