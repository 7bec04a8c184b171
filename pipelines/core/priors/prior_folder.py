"""A prior folder on disk, the format of the embedded priors (``embedded``): ``config.json`` (architecture, the
text encoder's identity, shard names, weight format), weight shards ``weights-*.safetensors`` (float16, or int8
with a float32 scale per row; each under 16 MB), ``CREDITS.md`` and ``manifest.json`` (every file's sha256 and
bytes; data, command, steps, metrics), written last: a folder with a manifest is complete.
``save_prior`` writes one, ``verify`` checks it, ``dequantize`` turns loaded shards back into float32 weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

SHARD_BYTES = 15 * 2 ** 20
MAX_TOTAL_BYTES = 80 * 2 ** 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_prior(folder: str | Path, kind: str, model, config: dict, manifest: dict, credits: str = "",
               dtype: str = "float16") -> Path:
    """Writes a prior folder: config.json, weight shards (``dtype`` float16, or int8: each large weight as
    ``NAME.int8`` with a float32 scale per row, ``NAME.scale``, the rest float16), CREDITS.md, then manifest.json
    with each file's sha256 (written last: a folder with a manifest is complete). Refuses models over
    MAX_TOTAL_BYTES."""
    import torch
    from safetensors.torch import save_file

    from ..quantize import quantizable, quantize_rows

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("weights-*.safetensors"):
        old.unlink()
    (folder / "manifest.json").unlink(missing_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype == "int8" and quantizable(v):
            state[k + ".int8"], state[k + ".scale"] = quantize_rows(v)
        else:
            state[k] = v.to(torch.float16 if dtype == "int8" else getattr(torch, dtype)) if v.is_floating_point() else v
    state = {k: v.contiguous() for k, v in state.items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"{kind} weights take {total / 2 ** 20:.1f} MiB; the embedded priors must stay under "
                         f"{MAX_TOTAL_BYTES / 2 ** 20:.0f} MiB")
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if cur and size + nbytes > SHARD_BYTES:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + nbytes
    shards.append(cur)
    names = [f"weights-{i + 1:02d}-of-{len(shards):02d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, str(folder / name), metadata={"kind": kind})
    (folder / "config.json").write_text(json.dumps(dict(config, kind=kind, weights=names, weights_dtype=dtype),
                                                   indent=1))
    (folder / "CREDITS.md").write_text(credits or "")
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps(dict(manifest, kind=kind, files=files), indent=1))
    return folder


def verify(folder: Path) -> dict:
    """The manifest, after checking that every file it lists is there with its sha256 (UserInputError if not)."""
    from ...config import UserInputError

    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"{folder} has no readable manifest.json ({e}); export the prior again with "
                             "`python -m pipelines priors train ... --export DIR`") from e
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise UserInputError(f"{path} is missing (listed in {folder / 'manifest.json'})")
        if sha256_file(path) != info["sha256"]:
            raise UserInputError(f"{path} does not match its sha256 in the manifest: the file is corrupt or was "
                                 "replaced; restore it from the repository (git checkout / git lfs pull)")
    return manifest


def dequantize(state: dict) -> dict:
    """float32 tensors of a saved state: ``NAME.int8`` with ``NAME.scale`` (``save_prior``'s int8) become ``NAME``."""
    from ..quantize import dequantize_rows

    out = {k: v.float() for k, v in state.items() if not k.endswith((".int8", ".scale"))}
    for k in [k for k in state if k.endswith(".int8")]:
        out[k.removesuffix(".int8")] = dequantize_rows(state[k], state[k.removesuffix(".int8") + ".scale"])
    return out


def text_encoder_config(folder: str | Path | None, max_tokens: int) -> dict:
    """What config.json records of the text encoder: its folder ('' = the installed package) and sha256."""
    from .text_encoder import describe_folder, resolve_folder

    info = describe_folder(resolve_folder(folder))
    return dict(folder=str(folder) if folder else "", max_tokens=max_tokens, sha256=info["sha256"],
                name=info["name"], license=info["license"], package=info["package"])
