"""The single-view network (ResNet-18 + voxel, point and mesh decoders), its checkpoint files, and the
image preparation and rendering that the method, the app and the benchmark share.

Checkpoint folder: ``config.json`` (architecture, weight format, shard names and sha256), ``weights-NN.pt``
shards under 15 MiB each (loaded with ``torch.load(weights_only=True)``), ``manifest.json`` (data, command,
metrics, license) and ``CREDITS.md`` (authors of the training shapes). int8 weights are stored per output
row with a float32 scale and dequantized on load.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..config import UserInputError
from .geometry import Mesh, PointCloud
from .quantize import dequantize_rows, quantizable, quantize_rows
from .resnet import ResNet18, normalize
from .shape_losses import edge_face_pairs
from .shapes import cubify, icosphere, mesh_edges
from .single_view_decoders import FoldingDecoder, PixelPointBranch, VoxelDecoder, graph_unpool, mlp

MAX_SHARD_BYTES = 15 * 2 ** 20
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 40_000_000
TEMPLATE_RADIUS = 0.4


class SingleViewModel(nn.Module):
    def __init__(self, width: int = 64, hidden: int = 512, n_points: int = 1024, ico_level: int = 4,
                 resolution: int = 32, image_size: int = 128, mesh_coarse_level: int = 0,
                 mesh_decoder: str = "mlp", mesh_folding_octaves: int = 6, voxel_decoder: str = "global",
                 point_decoder: str = "mlp"):
        """``mesh_coarse_level`` 0: one mesh head, offsets of the level-``ico_level`` icosphere. Otherwise coarse to
        fine (Pixel2Mesh): ``mesh_head`` offsets a level-``mesh_coarse_level`` icosphere, which is graph-unpooled
        (midpoint subdivision) to ``ico_level``, and ``mesh_fine_head`` adds residual offsets there.
        ``voxel_decoder`` 'lifted': the encoder's last three feature maps lifted into the grid (``VoxelDecoder``).
        ``point_decoder`` 'two-branch': half the points from an MLP of the pooled feature, half from the third
        stage's feature map (``PixelPointBranch``), as PSGN."""
        super().__init__()
        if voxel_decoder not in ("global", "lifted") or point_decoder not in ("mlp", "two-branch"):
            raise ValueError(f"voxel_decoder is 'global' or 'lifted' (got {voxel_decoder!r}), point_decoder 'mlp' "
                             f"or 'two-branch' (got {point_decoder!r})")
        if mesh_coarse_level and not 0 < mesh_coarse_level < ico_level:
            raise ValueError(f"mesh_coarse_level must be 0 (off) or in 1..{ico_level - 1} (got {mesh_coarse_level})")
        self.hparams = dict(width=width, hidden=hidden, n_points=n_points, ico_level=ico_level,
                            resolution=resolution, image_size=image_size)
        if mesh_decoder not in ("mlp", "folding") or (mesh_decoder == "folding" and mesh_coarse_level):
            raise ValueError(f"mesh_decoder is 'mlp' or 'folding' (the latter without coarse to fine), "
                             f"got {mesh_decoder!r}")
        if mesh_coarse_level:  # only when on, so default checkpoints' config.json stays as before
            self.hparams["mesh_coarse_level"] = mesh_coarse_level
        if mesh_decoder != "mlp":
            self.hparams.update(mesh_decoder=mesh_decoder, mesh_folding_octaves=mesh_folding_octaves)
        if voxel_decoder != "global":
            self.hparams["voxel_decoder"] = voxel_decoder
        if point_decoder != "mlp":
            self.hparams["point_decoder"] = point_decoder
        self.image_size = image_size
        self.mesh_coarse_level = mesh_coarse_level
        self.trained_heads: tuple[str, ...] = ("voxels", "points", "mesh")
        self.manifest: dict = {}  # a loaded checkpoint's manifest.json
        self.encoder = ResNet18(width)
        f = self.encoder.out_features
        lifted = (8 * width, 4 * width, 2 * width) if voxel_decoder == "lifted" else ()
        self.voxel_head = VoxelDecoder(f, hidden, resolution, lifted)
        self.point_pixel_head = None
        if point_decoder == "two-branch":
            cells = max(1, image_size // 16)  # the third stage's map at the training size
            if n_points < 2 * cells ** 2:
                raise ValueError(f"point_decoder 'two-branch' needs n_points >= {2 * cells ** 2} at {image_size} px "
                                 f"(a point per cell of its {cells}x{cells} map, as many from the MLP; got {n_points})")
            self.point_pixel_head = PixelPointBranch(4 * width, hidden // 2, cells, max(1, n_points // 2 // cells ** 2))
            n_points -= cells ** 2 * self.point_pixel_head.per_cell
        self.point_head = mlp(f, hidden, n_points * 3)
        nn.init.uniform_(self.point_head[-1].bias, -0.3, 0.3)  # start as a cloud, not a point
        sphere = icosphere(ico_level, TEMPLATE_RADIUS)
        self._register_template("template", sphere)
        coarse = icosphere(mesh_coarse_level, TEMPLATE_RADIUS) if mesh_coarse_level else sphere
        if mesh_decoder == "folding":
            self.mesh_head = FoldingDecoder(f, hidden // 2, sphere.verts, mesh_folding_octaves)
        else:
            self.mesh_head = mlp(f, hidden, coarse.verts.shape[0] * 3)
        heads = [self.mesh_head]
        if mesh_coarse_level:
            self._register_template("coarse", coarse)
            self.mesh_fine_head = mlp(f, hidden, sphere.verts.shape[0] * 3)
            heads.append(self.mesh_fine_head)
            for k in range(mesh_coarse_level, ico_level):  # the edges of each level, in icosphere's order
                self.register_buffer(f"unpool_edges_{k}", mesh_edges(icosphere(k).faces), persistent=False)
        for head in heads:  # start as the sphere
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def _register_template(self, name: str, mesh) -> None:
        self.register_buffer(f"{name}_verts", mesh.verts, persistent=False)
        self.register_buffer(f"{name}_faces", mesh.faces, persistent=False)
        self.register_buffer(f"{name}_edges", mesh_edges(mesh.faces), persistent=False)
        self.register_buffer(f"{name}_pairs", edge_face_pairs(mesh.faces), persistent=False)

    def mesh_decoder_heads(self) -> list[nn.Module]:
        return [self.mesh_head] + ([self.mesh_fine_head] if self.mesh_coarse_level else [])

    def mesh_from_features(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, F) features -> {mesh: (B, V, 3)}, with coarse to fine also {mesh_coarse: (B, Vc, 3)}."""
        if not self.mesh_coarse_level:
            return {"mesh": self.template_verts + self.mesh_head(f).view(len(f), -1, 3)}
        coarse = self.coarse_verts + self.mesh_head(f).view(len(f), -1, 3)
        verts = coarse
        for k in range(self.mesh_coarse_level, self.hparams["ico_level"]):
            verts = graph_unpool(verts, getattr(self, f"unpool_edges_{k}"))
        return {"mesh": verts + self.mesh_fine_head(f).view(len(f), -1, 3), "mesh_coarse": coarse}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, images: torch.Tensor, heads=("voxels", "points", "mesh")) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) in [0, 1] -> {voxels: (B, R, R, R) logits, points: (B, N, 3), mesh: (B, V, 3)}
        (coarse to fine: also mesh_coarse, (B, Vc, 3), for the losses)."""
        maps = self.encoder.feature_maps(normalize(images))
        f = self.encoder.pool(maps[-1])
        out = {}
        if "voxels" in heads:
            out["voxels"] = self.voxel_head(f, maps[::-1])
        if "points" in heads:
            out["points"] = self.point_head(f).view(len(f), -1, 3)
            if self.point_pixel_head is not None:
                out["points"] = torch.cat([out["points"], self.point_pixel_head(maps[2])], 1)
        if "mesh" in heads:
            out.update(self.mesh_from_features(f))
        return out


# ---------------------------------------------------------------------------------------------- checkpoint
def _encode(t: torch.Tensor, fmt: str) -> dict:
    t = t.detach().cpu()
    if not t.is_floating_point():
        return {"raw": t}
    if fmt == "int8" and quantizable(t):
        q, scale = quantize_rows(t)
        return {"q": q.reshape(t.shape[0], -1), "scale": scale, "shape": list(t.shape)}
    return {"raw": t.float() if fmt == "float32" else t.half()}


def _decode(e: dict) -> torch.Tensor:
    if "q" in e:
        return dequantize_rows(e["q"], e["scale"]).reshape(e["shape"])
    return e["raw"].float() if e["raw"].is_floating_point() else e["raw"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(model: SingleViewModel, folder: Path, fmt: str = "int8", manifest: dict | None = None,
                    credits_meta: dict | None = None) -> Path:
    """Writes the checkpoint folder (see the module docstring); returns its ``config.json``."""
    from .shape_packs import credits_markdown

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("weights-*.pt"):
        old.unlink()
    shards, current, size = [], {}, 0
    for name, t in model.state_dict().items():
        e = _encode(t, fmt)
        n = sum(v.numel() * v.element_size() for v in e.values() if isinstance(v, torch.Tensor))
        if current and size + n > MAX_SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name], size = e, size + n
    shards.append(current)
    names = []
    for i, shard in enumerate(shards):
        names.append(f"weights-{i:02d}.pt")
        torch.save(shard, folder / names[-1])
    config = dict(format_version=1, model=model.hparams, heads=list(model.trained_heads), weights_format=fmt,
                  shards={n: _sha256(folder / n) for n in names})
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    if manifest is not None:
        import platform

        manifest = dict(manifest, created=time.strftime("%Y-%m-%d %H:%M:%S"), torch=torch.__version__,
                        python=platform.python_version(), files={n: (folder / n).stat().st_size for n in names},
                        license="Weights: the project's license. Training data: see CREDITS.md (CC0, CC-BY 3.0 "
                                "and zlib-licensed models; CC-BY authors are credited there).")
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    if credits_meta:
        (folder / "CREDITS.md").write_text(credits_markdown(credits_meta, "Shapes the model was trained on"))
    return folder / "config.json"


def load_checkpoint(folder: str | Path, device="cpu") -> tuple[SingleViewModel, str]:
    """(model in eval mode on ``device``, a one-line description). Checks each shard's sha256."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    try:
        config = json.loads((folder / "config.json").read_text())
        model = SingleViewModel(**config["model"])
        state = {}
        for name, digest in config["shards"].items():
            if _sha256(folder / name) != digest:
                raise ValueError(f"{name} does not match its sha256 in config.json")
            state.update({k: _decode(e) for k, e in torch.load(folder / name, map_location="cpu",
                                                                weights_only=True).items()})
        model.load_state_dict(state)
        manifest = folder / "manifest.json"  # data, scores and the test-time settings they were measured with
        model.manifest = json.loads(manifest.read_text()) if manifest.is_file() else {}
        if not isinstance(model.manifest, dict):
            raise ValueError("its manifest.json is not a JSON object")
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError) as e:
        raise UserInputError(f"cannot load the checkpoint in {folder}: {e}") from e
    model.trained_heads = tuple(config.get("heads", model.trained_heads))
    repo = Path(__file__).resolve().parents[2]  # the shipped model is named from the repo; others by folder name
    where = folder.resolve().relative_to(repo) if folder.resolve().is_relative_to(repo) else folder.name
    desc = f"{where} ({config['weights_format']}, heads {', '.join(model.trained_heads)})"
    if model.manifest:
        d = model.manifest.get("data", {})
        desc += (f", trained on {d.get('train_shapes', '?')} shapes ({d.get('sources', '?')}) on "
                 f"{model.manifest.get('created', '?')}")
    return model.to(device).eval(), desc


# ------------------------------------------------------------------------------------------------- images
def object_mask(rgb: np.ndarray, tolerance: float = 0.12) -> np.ndarray:
    """(H, W) float alpha for an object on a plain background: pixels far from the border's median colour."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    bg = np.median(border, 0)
    if (np.linalg.norm(border - bg, axis=-1) < tolerance).mean() < 0.6:
        raise UserInputError("the background is not plain: use a picture of one object on a plain background, "
                             "or a PNG with a transparent background")
    dist = np.linalg.norm(rgb.astype(np.float32) - bg, axis=-1)
    return np.clip((dist - tolerance * 0.5) / (tolerance * 0.5), 0.0, 1.0)


def prepare_image(path: str | Path, size: int, margin: float = 0.08) -> torch.Tensor:
    """An uploaded image -> (size, size, 3) float: the object cropped and centred on white, ``margin`` of its
    longer side added on each side (0.08: it spans 0.86 of the view, as the single-view model's renders).

    The object is the alpha channel where the image has transparency, else what differs from a plain
    background. Raises ``UserInputError`` for non-images, huge images and images with no object.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if max(w, h) > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
                raise UserInputError(f"the image is too large ({w}x{h}); at most {MAX_IMAGE_SIDE} px a side and "
                                     f"{MAX_IMAGE_PIXELS // 10 ** 6} megapixels: downscale it")
            im.draft("RGB", (1024, 1024))  # JPEGs decode straight to a smaller size
            im = im.convert("RGBA")
            im.thumbnail((1024, 1024))
            rgba = np.asarray(im, dtype=np.float32) / 255.0
    except UserInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        # the error's text names the server's temporary path: not shown
        raise UserInputError(f"{Path(path).name} is not an image this app can read (PNG, JPEG, WebP, ...)") from e
    return prepare_array(rgba, size, margin)


def prepare_array(rgba: np.ndarray, size: int, margin: float = 0.08) -> torch.Tensor:
    """``prepare_image`` of an (H, W, 4) float RGBA array in [0, 1] (opaque: the object is found against its plain
    background). Raises ``UserInputError`` for images too small, with no object or with nothing else."""
    from .shape_packs import crop_to_object

    if min(rgba.shape[:2]) < 8:
        raise UserInputError(f"the image is too small ({rgba.shape[1]}x{rgba.shape[0]})")
    alpha = rgba[..., 3]
    if alpha.min() > 0.99:  # no transparency: find the object against the background
        alpha = object_mask(rgba[..., :3])
    coverage = float((alpha > 0.5).mean())
    if coverage < 0.002:
        raise UserInputError("no object found in the image (it looks empty or uniform)")
    if coverage > 0.97:
        raise UserInputError("the object fills the whole image: leave some plain background around it")
    return crop_to_object(np.concatenate([rgba[..., :3], alpha[..., None]], -1), size, margin)


# ---------------------------------------------------------------------------------------------- rendering
def view_camera(size: int, elevation_deg: float = 20.0):
    """The camera of the view frame (on -y, looking at the origin), as in the training renders."""
    from .cameras import Camera, look_at, spherical_to_cartesian

    eye = spherical_to_cartesian(2.2, torch.tensor(math.radians(elevation_deg)), torch.tensor(math.radians(-90.0)))
    return Camera.from_fov(look_at(eye), math.radians(40.0), size, size)


def height_colors(xyz: torch.Tensor) -> torch.Tensor:
    """(N, 3) colours from blue (low) to orange (high) by z."""
    t = ((xyz[:, 2] + 0.5).clamp(0, 1))[:, None]
    return torch.tensor([0.2, 0.4, 0.9]) * (1 - t) + torch.tensor([1.0, 0.55, 0.15]) * t


def render_points(xyz: torch.Tensor, size: int = 128, radius: int = 1) -> np.ndarray:
    """(size, size, 3) uint8: the points as small squares coloured by height, nearer ones on top."""
    from .raster import project

    cam = view_camera(size)
    xyz = xyz.detach().float().cpu()
    uv, depth = project(xyz, cam)
    colors = (height_colors(xyz).numpy() * 255).astype(np.uint8)
    img = np.full((size, size, 3), 255, np.uint8)
    order = torch.argsort(depth, descending=True).numpy()  # far first, so near points are painted last
    px, py = uv[order, 0].long().numpy(), uv[order, 1].long().numpy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x, y = px + dx, py + dy
            ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            img[y[ok], x[ok]] = colors[order][ok]
    return img


def mesh_items(pred: dict, model) -> list:
    """The prediction's meshes as one ``Mesh`` each: the icosphere's vertices with the template's faces, or the
    cubified meshes as they are (``mesh_from`` voxels)."""
    if isinstance(pred["mesh"], list):
        return pred["mesh"]
    return [Mesh(v, model.template_faces) for v in pred["mesh"].float()]


def prediction_geometry(pred: dict, model: SingleViewModel, threshold: float = 0.5) -> dict:
    """{voxels: Mesh of the solid cells, points: PointCloud, mesh: Mesh} of the first item of a prediction."""
    out = {}
    if "voxels" in pred:
        m = cubify(torch.sigmoid(pred["voxels"][0].float().cpu()) > threshold)
        m.vert_colors = torch.tensor([0.55, 0.7, 0.9]).expand(len(m.verts), 3).clone()
        out["voxels"] = m
    if "points" in pred:
        xyz = pred["points"][0].float().cpu()
        out["points"] = PointCloud(xyz, height_colors(xyz))
    if "mesh" in pred:
        m = mesh_items(pred, model)[0]
        v = m.verts.float().cpu()
        out["mesh"] = Mesh(v, m.faces.cpu(), torch.tensor([0.85, 0.75, 0.6]).expand(len(v), 3).clone())
    return out


def preview_images(image: torch.Tensor, pred: dict, model: SingleViewModel, threshold: float = 0.5,
                   size: int = 128) -> dict[str, np.ndarray]:
    """uint8 renders keyed input / voxels / points / mesh, all seen from the input's side."""
    from .images import to_uint8
    from .raster import render_mesh

    out = {"input": to_uint8(image.permute(1, 2, 0))}
    geo = prediction_geometry(pred, model, threshold)
    cam = view_camera(size)
    for key in ("voxels", "mesh"):
        if key in geo:
            m = geo[key]
            if m.num_faces:
                with torch.no_grad():
                    rgb, _ = render_mesh(m, cam, smooth=key == "mesh")
                out[key] = to_uint8(rgb)
            else:
                out[key] = np.full((size, size, 3), 255, np.uint8)
    if "points" in geo:
        out["points"] = render_points(geo["points"].xyz, size)
    return out


def start_model(cfg, dev):
    """(model on ``dev``, a line for the log) to train: from ``cfg.checkpoint`` (a ``SingleViewConfig``), or new
    (the encoder from ImageNet weights with ``cfg.pretrained``)."""
    if cfg.checkpoint:
        return load_checkpoint(cfg.checkpoint, dev)[0], f"starting from checkpoint {cfg.checkpoint}"
    model = SingleViewModel(cfg.width, cfg.hidden, cfg.n_points, cfg.ico_level, image_size=cfg.image_size,
                            mesh_coarse_level=cfg.mesh_coarse_level, mesh_decoder=cfg.mesh_decoder,
                            mesh_folding_octaves=cfg.mesh_folding_octaves, voxel_decoder=cfg.voxel_decoder,
                            point_decoder=cfg.point_decoder)
    if not cfg.pretrained:
        return model.to(dev), ""
    from .resnet import load_torchvision_weights

    try:
        load_torchvision_weights(model.encoder, cfg.pretrained)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserInputError(f"could not load ImageNet weights: {e}") from e
    return model.to(dev), f"encoder starts from ImageNet weights {cfg.pretrained}"
