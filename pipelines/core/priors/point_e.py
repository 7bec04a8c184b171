"""Point-E's models, loaded in the three tiers: the released checkpoints (real), the project's own (embedded),
tiny random ones in the official format (test).

Contract: ``load_point_e(source, name, device)`` returns the ``core.point_diffusion`` model of config ``name``
with the weights of ``CHECKPOINT_FILES[name]`` (``base_40m.pt``, ``upsample_40m.pt``, ``sdf.pt``, ...) in the
folder or Hub repository ``source``, loaded with ``strict=True``; a missing file or a tensor of the wrong shape is
a ``UserInputError`` naming the file and the fix. ``load_models(source, base, device, ...)`` loads what a run needs
(base, upsampler, SDF model, the conditioning encoder) behind one cache and says which tier they are
(``tier_of``): a folder with a ``configs.json`` whose "tier" is "test" holds test doubles (``save_tiny_point_e``
writes one); "embedded" (or '' when it ships) is ``EMBEDDED_DIR``; anything else is the released models.

The embedded tier's folder (made by the project's training, shipped) is ``assets/pointe/`` with one
prior folder (``prior_folder.save_prior`` format: config.json, int8 safetensors shards, CREDITS.md,
manifest.json with sha256s) per model: ``base/``, ``upsample/`` (optional) and ``sdf/`` (optional). Each
config.json holds ``"model"``: a ``point_diffusion`` config dict (``name`` = class, e.g. a small
CLIPImagePointDiffusionTransformer with ``clip_dim`` = the scorer's embedding size) and, for the base,
``"condition"``: "scorer" (unit embeddings of the embedded scorer, ``encode_images`` for an image and
``encode_text`` for a prompt, in one space) or "scorer-grid" (an ``EmbeddedGridPointDiffusionTransformer``: the
image's grid of scorer features plus its embedding, or a prompt's embedding alone; ``names["kind"]`` 'gridvec';
``point_e_embedded``). Importing this module imports neither torch nor transformers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...config import UserInputError
from ..point_configs import CHECKPOINT_FILES, MODEL_CONFIGS, model_kind
from .hub import ModelCache, hub_error, local_path

OFFICIAL_URL = "https://openaipublic.azureedge.net/main/point-e/"
EMBEDDED = "embedded"
EMBEDDED_DIR = Path(__file__).resolve().parents[3] / "assets" / "pointe"
DEFAULT_REAL = "point_e_model_cache"
"""The folder the official package downloads into (relative to where it runs): the real tier's default."""
TIERS = ("real", "embedded", "test")
BASE_MODELS = ("base40M", "base300M", "base1B", "base40M-imagevec", "base40M-textvec")


def embedded_available() -> bool:
    return (EMBEDDED_DIR / "base" / "manifest.json").is_file()


def default_source() -> str:
    """What a form starts on: the embedded models when they ship, else the official download folder."""
    return EMBEDDED if embedded_available() else DEFAULT_REAL


def where_to_get(files: list[str] | None = None) -> str:
    """The sentence every 'Point-E weights not found' message ends with."""
    files = files or [CHECKPOINT_FILES["base40M"], CHECKPOINT_FILES["upsample"], CHECKPOINT_FILES["sdf"]]
    urls = " ".join(OFFICIAL_URL + f for f in files)
    return (f"Put the official Point-E checkpoints ({', '.join(files)}) in a folder and name it (CLI: --checkpoints "
            "DIR; the tab: 'Point-E checkpoints'), or a Hugging Face repository id holding them; they download "
            f"where there is internet from {urls} (the `point_e` package saves them in ./{DEFAULT_REAL}). "
            + ("'embedded' runs the project's own offline models." if embedded_available() else
               "No Point-E model is available offline yet: the project's embedded models are not shipped."))


def tier_of(source: str) -> str:
    """'test', 'embedded' or 'real' for a checkpoint source ('' = ``default_source()``)."""
    source = (source or "").strip() or default_source()
    if source.lower() == EMBEDDED:
        return "embedded"
    folder = Path(source).expanduser()
    if (folder / "base" / "manifest.json").is_file():
        return "embedded"
    cfg = _folder_configs(folder)
    return "test" if cfg.get("tier") == "test" else "real"


def _folder_configs(folder: Path) -> dict:
    path = folder / "configs.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserInputError(f"{path} is not valid JSON ({e})") from e


def _resolve(source: str, filename: str) -> Path:
    """The local path of ``filename`` in a folder or Hub repository (downloaded once)."""
    folder = local_path(source, "Point-E checkpoint", where_to_get())
    if folder is not None:
        path = folder / filename
        if not path.is_file():
            raise UserInputError(f"{folder} has no {filename}. " + where_to_get([filename]))
        return path
    from huggingface_hub import hf_hub_download

    try:
        try:
            return Path(hf_hub_download(source, filename, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: fetch it
            return Path(hf_hub_download(source, filename))
    except Exception as e:  # noqa: BLE001 - offline, no such repository or file
        raise hub_error(source, e, where_to_get([filename])) from e


def check_state_dict(state: dict, config: dict, path: Path, name: str) -> None:
    """UserInputError unless ``state`` has exactly the names and shapes of config ``name`` (what is wrong, which
    config the file looks like instead, and the fix)."""
    from ..point_diffusion import build_model

    def shapes(cfg) -> dict:
        return {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}

    want = shapes(config)
    got = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    if got == want:
        return
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [k for k in want if k in got and got[k] != want[k]]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} tensors have other shapes (e.g. {k}: {got[k]} in the file, {want[k]} expected)")
    if missing:
        parts.append(f"{len(missing)} are missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} are unexpected (e.g. {extra[0]})")
    like = [n for n in MODEL_CONFIGS if n != name and shapes(n) == got]
    hint = f"; it looks like the {like[0]} weights ({CHECKPOINT_FILES[like[0]]})" if like else ""
    raise UserInputError(f"{path} does not hold Point-E's {name} weights: {'; '.join(parts)}{hint}. Replace it "
                         f"with the official {CHECKPOINT_FILES.get(name, path.name)} ({OFFICIAL_URL}"
                         f"{CHECKPOINT_FILES.get(name, path.name)}).")


def load_point_e(source: str, name: str, device="cpu"):
    """The model of config ``name`` with its weights from ``source`` (a folder or Hub id), strictly loaded.

    A folder with a ``configs.json`` ({"tier": ..., "configs": {name: config dict}}) overrides the released
    configs (the test tier's tiny models); otherwise ``MODEL_CONFIGS[name]``.
    """
    import torch

    from ..point_diffusion import build_model

    if name not in CHECKPOINT_FILES:
        raise UserInputError(f"unknown Point-E model {name!r}; choose one of {', '.join(CHECKPOINT_FILES)}")
    folder = Path(source).expanduser()
    config = _folder_configs(folder).get("configs", {}).get(name, MODEL_CONFIGS[name]) if folder.is_dir() \
        else MODEL_CONFIGS[name]
    path = _resolve(source, CHECKPOINT_FILES[name])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated download, not a torch file
        url = OFFICIAL_URL + CHECKPOINT_FILES[name]
        raise UserInputError(f"could not read {path} ({type(e).__name__}: {str(e)[:200]}); it is not a PyTorch "
                             f"checkpoint or is incomplete: download {url} again") from e
    if not isinstance(state, dict):
        raise UserInputError(f"{path} holds a {type(state).__name__}, not a state dict of Point-E's {name} model")
    check_state_dict(state, config, path, name)
    model = build_model(config, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(torch.device(device)).eval().requires_grad_(False)


@dataclass
class PointEModels:
    """What one run samples with, and what the UI says about it."""

    tier: str
    source: str
    base_name: str
    base: object
    upsampler: object | None = None
    sdf: object | None = None
    encoder: object | None = None
    """For grid/vec models: ``grid(images)``, ``image_vec(images)``, ``text_vec(texts)`` (a PointECLIP or an
    embedded adapter); None for an unconditional base."""
    names: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.names.get("kind", "grid")

    def describe(self) -> str:
        parts = [f"{k} {v}" for k, v in self.names.items() if k != "kind"]
        shipped = self.tier == "embedded" and (self.source in ("", EMBEDDED)
                                               or Path(self.source).resolve() == EMBEDDED_DIR)
        where = "assets/pointe" if shipped else self.source  # no server path for shipped models
        return f"{self.tier} tier ({where}): " + ", ".join(parts)


_CACHE = ModelCache()


def load_models(source: str, base_name: str, device, clip: str = "", upsample: bool = True, sdf: bool = True,
                dtype: str = "auto") -> PointEModels:
    """The models of a run, cached per (source, base, parts, device).

    Args:
        source: '' (``default_source()``), 'embedded', a folder of official checkpoints or a Hub id.
        base_name: one of BASE_MODELS (the embedded tier has one base and ignores it).
        clip: CLIP ViT-L/14 Hub id or folder; '' uses ``source``/clip when it exists, else the Hub id.
        dtype: of the CLIP tower ('auto': float16 on CUDA); Point-E's models stay float32 (autocast on top).
    """
    import torch

    source = (source or "").strip() or default_source()
    tier = tier_of(source)
    dev = torch.device(device)
    key = (source, base_name, clip, upsample, sdf, str(dev), dtype)
    if tier == "embedded":
        from .point_e_embedded import load_embedded_models

        folder = EMBEDDED_DIR if source.lower() == EMBEDDED else Path(source)
        return _CACHE.get(key, lambda: PointEModels(**load_embedded_models(folder, dev, upsample, sdf)))
    if base_name not in BASE_MODELS:
        raise UserInputError(f"unknown base model {base_name!r}; choose one of {', '.join(BASE_MODELS)}")

    def load() -> PointEModels:
        from .point_e_clip import DEFAULT_CLIP_L, load_point_e_clip

        base = load_point_e(source, base_name, dev)
        up = load_point_e(source, "upsample", dev) if upsample else None
        sdf_model = load_point_e(source, "sdf", dev) if sdf else None
        local = Path(source).expanduser()
        clip_source = clip or (str(local / "clip") if (local / "clip" / "config.json").is_file() else DEFAULT_CLIP_L)
        kind = model_kind(base_name)
        encoder = load_point_e_clip(clip_source, dev, dtype) if kind in ("grid", "vec") or up is not None else None
        names = dict(kind=kind, base=base_name, upsampler="upsample" if up is not None else "off",
                     sdf="sdf" if sdf_model is not None else "off", clip=clip_source if encoder is not None else "-")
        return PointEModels(tier, source, base_name, base, up, sdf_model, encoder, names)

    return _CACHE.get(key, load)


def clear_cache() -> None:
    _CACHE.clear()


# --------------------------------------------------------------------------------------------- test tier
def tiny_configs(grid_dim: int = 32, grid_tokens: int = 16, clip_dim: int = 16) -> dict:
    """Released configs shrunk to milliseconds on a CPU (same classes, so the same loader and sampler)."""
    small = dict(width=32, layers=2, heads=4)
    grid = dict(grid_dim=grid_dim, grid_tokens=grid_tokens)
    return {
        "base40M": dict(MODEL_CONFIGS["base40M"], **small, **grid, n_ctx=64),
        "base40M-textvec": dict(MODEL_CONFIGS["base40M-textvec"], **small, clip_dim=clip_dim, n_ctx=64),
        "base40M-imagevec": dict(MODEL_CONFIGS["base40M-imagevec"], **small, clip_dim=clip_dim, n_ctx=64),
        "upsample": dict(MODEL_CONFIGS["upsample"], **small, **grid, n_ctx=192, cond_ctx=64),
        "sdf": dict(MODEL_CONFIGS["sdf"], width=32, encoder_layers=1, decoder_layers=1, n_ctx=256),
    }


def save_tiny_point_e(folder: str | Path, seed: int = 0) -> Path:
    """The test tier: tiny random models saved as the official files (``torch.save`` of state dicts named as
    released), a configs.json naming their configs, and a tiny CLIP in ``clip/``."""
    import torch

    from ..point_diffusion import build_model
    from .clip import tiny_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configs = tiny_configs()
    torch.manual_seed(seed)
    for name, cfg in configs.items():
        model = build_model(cfg)
        if hasattr(model, "output_proj") and name != "sdf":
            torch.nn.init.normal_(model.output_proj.weight, std=0.05)  # untrained but not silent
        torch.save(model.state_dict(), folder / CHECKPOINT_FILES[name])
    tiny_clip(folder / "clip", seed)
    (folder / "configs.json").write_text(json.dumps({"tier": "test", "configs": configs}, indent=1))
    return folder
