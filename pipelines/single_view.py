"""Single-view reconstruction: one RGB image to a 32^3 voxel grid, a point cloud and a mesh.

A ResNet-18 encoder turns the image into a 512-d feature; three decoders read it: 3D transposed
convolutions to voxel logits (class-balanced binary cross-entropy plus soft IoU), an MLP to N x 3 points
(Chamfer distance, optional density-aware Chamfer and repulsion), and an MLP
to offsets of a level-4 icosphere's vertices (Chamfer distance on surface samples + Laplacian smoothing,
optional edge-length and normal-consistency terms). Targets live in the input view's frame (see
``single_view_data``), so predictions face the way the picture does.

``mode="train"`` trains on packed data (``python -m pipelines single_view data build``) and evaluates on
held-out shapes; ``mode="predict"`` reconstructs one image with a checkpoint (default: the shipped one).
Model, checkpoint files and rendering helpers are in ``core/single_view_net.py``; the held-out scores, the
prediction's files and the checkpoint's manifest in ``core/single_view_outputs.py``; the training batches in
``core/single_view_batches.py``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Literal

from .config import PipelineConfig, RunContext, UserInputError, run_guarded
from .core.single_view_batches import training_batch
from .core.single_view_outputs import (HEADS, checkpoint_inference, checkpoint_manifest, evaluate, export_prediction,
                                      check_inference_settings, parse_heads, parse_mirror_heads, predict)
from .core.training import ema_update, schedule_progress
from .events import Done, Event, Log, Preview, Progress

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets" / "single_view"
SHIPPED_MODEL = ASSETS / "model"
MINI_PACK = ASSETS / "mini.npz"
BUILT_PACKS = Path(".data/single_view/pack")


@dataclass
class SingleViewConfig(PipelineConfig):
    mode: Literal["train", "predict"] = "train"
    """'train': fit the model on packed shapes and score it on held-out ones; 'predict': one image."""
    image: str = ""
    """predict: an image file (PNG with transparency, or an object on a plain background)."""
    checkpoint: str = ""
    """predict: a checkpoint folder (empty: the shipped assets/single_view/model); train: start from it."""
    data: str = ""
    """train: pack files (comma-separated) or a folder of them; empty: .data/single_view/pack if built,
    else the shipped mini set (assets/single_view/mini.npz)."""
    sources: str = "sh3d"
    """train: train on shapes from these sources (comma list of sh3d, sh3d-default, pybullet, procedural, zeroad, folder; 'all')."""
    eval_sources: str = ""
    """Score on held-out shapes from these sources (empty: the same as ``sources``)."""
    train_fraction: float = 1.0
    """Train on this share of the training shapes (nested subsets: 0.25 lies inside 0.5)."""
    heads: str = "voxels,points,mesh"
    """Decoders to train, jointly with the encoder (comma list; one name trains one at a time)."""
    steps: int = 4000
    """Optimisation steps."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 1e-3
    """Adam learning rate (cosine decay to 5% after 100 warm-up steps)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW) when above 0: the model fits its training renders far better than new
    shapes (bench/RESULTS.md, issue 21), so a regulariser to try; 0 keeps plain Adam."""
    image_size: int = 128
    """Input side in pixels (packs are resized to it)."""
    width: int = 64
    """ResNet width (64: the real ResNet-18; smaller for quick CPU runs)."""
    hidden: int = 512
    """Decoder width."""
    n_points: int = 1024
    """Points the point decoder predicts."""
    ico_level: int = 4
    """Subdivisions of the mesh decoder's icosphere template (4: 2562 vertices)."""
    mesh_coarse_level: int = 0
    """Coarse to fine mesh decoder (Pixel2Mesh), 0: off. Else one head offsets an icosphere of this level (below
    ``ico_level``) under the full mesh regularisers, graph unpooling (midpoint subdivision) takes it to ``ico_level``
    and a second head adds residual offsets there, regularised ``mesh_fine_reg`` times as much."""
    mesh_decoder: Literal["mlp", "folding"] = "mlp"
    """The mesh head: 'mlp', one MLP from the image feature to every vertex's offset (its last layer grows with
    the template: 3.9 M parameters at level 4, 15.7 M at 5); 'folding', one MLP shared across vertices from each
    vertex's position (Fourier features) and the feature to its offset (FoldingNet / AtlasNet; 0.2 M at any level)."""
    mesh_folding_octaves: int = 6
    """'folding' decoder: octaves of the vertex position's Fourier features (pi to 2^(n-1) pi)."""
    mesh_fine_reg: float = 0.1
    """Coarse to fine: the mesh regularisers' weights on the fine mesh as a share of those on the coarse one."""
    voxel_decoder: Literal["global", "lifted"] = "global"
    """The voxel head: 'global', transposed 3D convolutions from the pooled image feature (3D-R2N2's decoder);
    'lifted', the same with the encoder's last three feature maps lifted into the grid at 4^3, 8^3 and 16^3 (each
    pixel's features spread along its depth column by a 1x1 convolution; skip connections from 2D to 3D), so the
    picture places thin parts directly (issue 21). Off: at about 7100 steps of the candidate recipe it gained voxel IoU
    0.006-0.012 over the 7920-step global decoder (0.479 / 0.485), about the run-to-run noise (bench/RESULTS.md)."""
    point_decoder: Literal["mlp", "two-branch"] = "mlp"
    """The point head: 'mlp', every point from the pooled feature; 'two-branch', half of them instead from the
    third ResNet stage's feature map, a few points per cell as offsets from where the cell lies in the picture
    (PSGN's two-branch decoder, Fan et al. 2017). Off: with it points F1@5 % fell 0.758 -> 0.736 (recall up,
    precision down: the image-plane points also cover hidden parts; bench/RESULTS.md)."""
    gt_points: int = 2048
    """Target surface points per image (and samples on the predicted mesh) for the Chamfer losses."""
    w_laplacian: float = 1.0
    """Weight of the mesh's Laplacian smoothing (mean length of the uniform Laplacian). The first shipped model
    (2026-11-21) was trained with 0.1, where its gradient was a sixth of the Chamfer's and the meshes came out crumpled."""
    w_edge: float = 1.0
    """Weight of the mesh's squared edge length (PyTorch3D's mesh-fitting tutorial: 1.0; the first shipped
    model: 0)."""
    w_normal: float = 0.01
    """Weight of the normal consistency of adjacent faces (the tutorial: 0.01; the first shipped model: 0)."""
    mesh_recall_weight: float = 1.0
    """Training: weight of the mesh Chamfer's target-to-mesh half (recall) against its mesh-to-target half. A
    smooth mesh's F1 deficit is recall (bench/RESULTS.md, issue 21): above 1 the sphere is pulled onto parts it
    misses, as ``mesh_fit_recall`` does at test time."""
    mesh_reg_end: float = 1.0
    """The three mesh regularisers' weights at the end of training as a share of the above, reached linearly
    (1: constant). Below 1 the sphere is held smooth while it takes the object's shape and is then let onto thin
    parts: at constant weights 1 / 1 / 0.01 folds fell from 0.33 to 0.02 of the faces but F1@5 % from 0.669 to 0.608."""
    mirror_heads: str = "points"
    """predict and scoring: heads whose prediction is combined with the prediction for the image mirrored
    left-right (comma list of voxels, points; empty: off): points keep both clouds, voxels average their
    probabilities; the mesh is the image's own. Training mirrors half the images, so the model knows both. The
    first shipped model's points gain F1 at every threshold and Chamfer distance on all three render sets (83 held-out
    shapes x 2 default views: F1@5 % 0.682 -> 0.726, CD 0.0081 -> 0.0070; the stray share moves by -0.002 to
    +0.003); its voxels trade (IoU +0.003, CD 0.0177 -> 0.0196), so they are off by default (bench/RESULTS.md,
    issue 21)."""
    mesh_fit_steps: int = 0
    """predict and scoring: test-time fitting, Adam steps that move the predicted mesh's vertices toward the point
    head's cloud under the mesh regularisers at ``mesh_fit_reg`` of the weights above (0: the mesh as the head
    predicts it). Off by default: it helps a smooth mesh head (100 steps, the defaults below, 83 held-out shapes x 2
    views: F1@1 % 0.056 -> 0.064, F1@5 % 0.657 -> 0.676, mesh CD 0.0102 -> 0.0098, self-intersecting faces 0.069 ->
    0.055) but lowered an earlier model's crumpled mesh's F1@5 % (0.668 -> 0.646 on 40 shapes, recall weight 1),
    and takes about 1.3-2.2 s an image on a 2-core CPU (bench/RESULTS.md, issue 21). So it belongs to the model:
    the shipped one's manifest sets 100 (``checkpoint_inference``)."""
    mesh_from: Literal["icosphere", "voxels"] = "icosphere"
    """predict and scoring: where the mesh comes from. 'icosphere': the mesh head's deformed icosphere (Pixel2Mesh;
    one closed sphere-like surface, so a chair's legs and the holes between them are folds and spikes); 'voxels':
    Mesh R-CNN's (Gkioxari et al. 2019), the voxel head's solid cells cubified into a surface of the grid's own
    topology, then fitted to the points of the cloud near it by the same test-time fitting (``mesh_fit_*``; the mesh
    head is not needed). A trade, so off: for the shipped model as the app predicts (83 held-out shapes x 2 views)
    mesh F1@5 % 0.703 -> 0.718, self-intersecting faces 0.076 -> 0.003, normal consistency level, but recall at 5 %
    0.767 -> 0.746, and on renders outside the training ranges worse on 8 numbers (F1@5 % 0.448 -> 0.424); chairs
    keep their legs, round shapes come out wrinkled; about 10 s an image on a 2-core CPU (bench/RESULTS.md, issue
    21)."""
    mesh_fit_reg: float = 0.3
    """Test-time fitting: the mesh regularisers' weights as a share of w_laplacian, w_edge and w_normal."""
    mesh_fit_recall: float = 3.0
    """Test-time fitting: weight of the Chamfer's cloud-to-mesh half (recall) against its mesh-to-cloud half; the
    smooth mesh's F1 deficit is recall (1: F1@5 % 0.660 on the held-out shapes, 3: 0.676, 6 on 40 of them: more
    folds). The shipped 2048-point model's manifest sets 4: on training shapes its recall at 5 % rises at no cost in
    F1, where 5 adds folds and no F1 (bench/RESULTS.md, issue 21)."""
    mesh_fit_lr: float = 0.002
    """Test-time fitting: Adam's step size on the vertices (the mesh spans about 1)."""
    voxel_pos_power: float = 0.5
    """Voxel loss: weight of each grid's solid cells in its cross-entropy, ((1 - f) / f) ** power with f the
    occupied fraction (0: plain BCE, the first shipped model; 1: solid and empty cells weigh the same in total)."""
    w_voxel_iou: float = 1.0
    """Weight of the soft-IoU loss (1 - IoU with probabilities) on the voxels, which gives empty space no
    credit (the first shipped model: 0)."""
    w_dcd: float = 0.02
    """Point loss: weight of the density-aware Chamfer distance (Wu et al. 2021), bounded per point (the first shipped
    model: 0; 0.02 puts its gradient at about 1.5x the Chamfer's at that model's predictions)."""
    dcd_alpha: float = 1000.0
    """DCD's distance scale: a point d away keeps exp(-alpha d^2) of its credit (1000: exp(-0.9) at 3 %)."""
    w_repulsion: float = 0.0
    """Point loss: weight of the repulsion between predicted points closer than ``repulsion_radius``
    (PU-Net's, compactly supported; off for both shipped models)."""
    repulsion_radius: float = 0.02
    """Distance (share of the object's longest side) beyond which predicted points do not repel."""
    voxel_threshold: float = 0.5
    """Occupancy probability above which a voxel is solid (IoU, exported voxels). A model trained with the soft-IoU
    loss has a fuller grid: the shipped one's manifest sets 0.7 (read on training shapes; ``checkpoint_inference``)."""
    voxel_point_threshold: float = 0.0
    """predict and scoring: cells that hold a point of the point head's cloud are solid above this occupancy
    probability, the others above ``voxel_threshold`` (0: off). A hysteresis threshold: where the voxel head is
    unsure, the point head's surface decides, which keeps thin parts that a high threshold drops. A trade, so off:
    for the shipped model at 0.7 / 0.3 (83 held-out shapes x 2 views) IoU 0.458 -> 0.462, voxels CD 0.0104 ->
    0.0097, but voxels F1 at 1-4 % and precision lower and more stray voxels (bench/RESULTS.md, issue 21)."""
    point_jitters: int = 0
    """predict and scoring: the point cloud also takes the point head's clouds for this many jittered copies of the
    image (zoomed 0.9-1.1x, shifted 3 % of its side: ``JITTERS``; each with its mirror when ``mirror_heads`` has
    points), up to 10 (0: off). A test-time augmentation: the union covers more of the surface, one more pass of the
    network (two mirrored) per copy; the voxels and the mesh's fitting keep the image's own cloud. A trade, so off: for
    the shipped model at 10 (83 held-out shapes x 2 views) points F1@5 % 0.739 -> 0.773, F1@1 % 0.068 -> 0.102, CD
    0.0063 -> 0.0053, but precision at 5 % 0.703 -> 0.691 and the stray share up as much (bench/RESULTS.md, issue 21)."""
    checkpoint_inference: bool = True
    """predict: test-time settings (mirror_heads, mesh_fit_steps, voxel_threshold, voxel_point_threshold,
    point_jitters) left at their defaults take the values the checkpoint's held-out scores were measured with (its
    manifest.json 'inference'): they belong to the model. Off: this config's values as they are."""
    inference_given: str = ""
    """predict: test-time settings (comma list, e.g. mesh_from) chosen on purpose: the checkpoint's never replace
    them, even where they equal the defaults (the tab names the mesh choice it passes)."""
    pretrained: str = ""
    """Optional local torchvision ResNet-18 ImageNet weights (.pth) to start the encoder from."""
    flip: bool = True
    """train: mirror half the images (and their targets) left-right."""
    photometric: float = 0.0
    """train: share of the images whose colours are jittered each step (channel order, saturation 0-1.3x, gamma
    0.7-1.4; white stays white, the shape targets are untouched), against the model's fit to its own renders. At
    0.5 it changed nothing beyond run-to-run noise (bench/RESULTS.md, issue 21), so it is off."""
    mixed_precision: bool = True
    """On CUDA, run the networks in bfloat16 autocast (losses in float32)."""
    ema_decay: float = 0.0
    """train: score and export an exponential moving average of the weights (Polyak averaging) with this decay per
    step, e.g. 0.999 (0: the last step's weights)."""
    eval_views: int = 0
    """Views per held-out shape to score (0: all)."""
    max_seconds: float = 0.0
    """Stop training after this many seconds (0: no limit); the learning-rate and regulariser schedules end at
    whichever of ``steps`` and this runs out first."""
    export: bool = True
    """Write the checkpoint and the preview sample's predictions at the end."""
    weights_format: Literal["int8", "float16", "float32"] = "int8"
    """How the checkpoint stores weights (int8: per-row scales, about a quarter of float32)."""
    preview_every: int = 250

    def mesh_reg_weights(self) -> dict[str, float]:
        """The mesh regularisers' weights, as ``mesh_loss`` takes them."""
        return {"laplacian": self.w_laplacian, "edge": self.w_edge, "normal": self.w_normal}

    PRESETS: ClassVar[dict] = {
        # One GPU, a few minutes. The first shipped model (2026-11-21) was trained with it and the mesh weights of
        # that day (w_laplacian 0.1, w_edge 0, w_normal 0), plain voxel BCE and plain point Chamfer
        # (voxel_pos_power 0, w_voxel_iou 0, w_dcd 0, w_repulsion 0); the one shipped on 2026-12-03 with today's
        # defaults, mesh_recall_weight 3, mesh_reg_end 0.1 and 6000 steps (assets/single_view/README.md).
        "gpu": dict(steps=4000, batch_size=64),
        # Minutes on a 2-core CPU with the shipped mini set: a small network, small images.
        "cpu": dict(steps=300, batch_size=16, image_size=64, width=16, hidden=128, n_points=512, ico_level=3,
                    gt_points=1024, preview_every=50, mixed_precision=False),
    }


CONFIG = SingleViewConfig
LOG_EVERY = 10  # steps between Progress events: each one costs a host sync


def run(cfg: SingleViewConfig) -> Iterator[Event]:
    body = _predict if cfg.mode == "predict" else _train
    return run_guarded("single_view", cfg, body, "lower --batch-size or --image-size")


def resolve_packs(data: str) -> list[Path]:
    """The pack files a training run reads (see ``SingleViewConfig.data``)."""
    if not data:
        built = sorted(BUILT_PACKS.glob("*.npz"))
        if built:
            return built
        if MINI_PACK.is_file():
            return [MINI_PACK]
        raise UserInputError("no training data: build it with `python -m pipelines single_view data build` "
                             "(needs `apt-get install sweethome3d-furniture`)")
    paths = []
    for part in (p.strip() for p in data.split(",") if p.strip()):
        p = Path(part)
        paths += sorted(p.glob("*.npz")) or sorted((p / "pack").glob("*.npz")) if p.is_dir() else [p]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise UserInputError(f"no pack files at {data!r}" + (f" (missing: {', '.join(missing)})" if missing else ""))
    return paths


def _train(cfg: SingleViewConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.shape_packs import load_packs, scored_on, split_shapes
    from .core.single_view_losses import check_mesh_fit, training_losses
    from .core.single_view_net import preview_images, save_checkpoint, start_model

    heads = parse_heads(cfg.heads)
    if cfg.steps < 1 or cfg.batch_size < 1 or not 0 < cfg.train_fraction <= 1:
        raise UserInputError("steps and batch_size must be positive, train_fraction in (0, 1]")
    if cfg.mesh_coarse_level and not 0 < cfg.mesh_coarse_level < cfg.ico_level:
        raise UserInputError(f"mesh_coarse_level must be 0 (off) or between 1 and ico_level - 1 = {cfg.ico_level - 1}")
    if cfg.mesh_decoder == "folding" and cfg.mesh_coarse_level:
        raise UserInputError("mesh_decoder 'folding' works on one template: set mesh_coarse_level to 0")
    if not cfg.mesh_recall_weight > 0:
        raise UserInputError(f"mesh_recall_weight must be above 0 (got {cfg.mesh_recall_weight})")
    if not 0 <= cfg.ema_decay < 1:
        raise UserInputError(f"ema_decay is 0 (off) or below 1, e.g. 0.999 (got {cfg.ema_decay})")
    if not 0 <= cfg.photometric <= 1:
        raise UserInputError(f"photometric is the share of images recoloured, 0 to 1 (got {cfg.photometric})")
    check_mesh_fit(cfg)
    check_inference_settings(cfg)
    parse_mirror_heads(cfg.mirror_heads)
    dev = ctx.device
    started = time.perf_counter()
    packs = resolve_packs(cfg.data)
    model, start = start_model(cfg, dev)
    if start:
        yield Log(start)
    data = load_packs(packs, dev, model.image_size)
    train_idx, test_idx, note = split_shapes(data, cfg.sources, cfg.eval_sources, cfg.train_fraction)
    if not train_idx:
        raise UserInputError(f"no training shapes from sources {cfg.sources!r} in {', '.join(map(str, packs))}")
    train, test = data.select(train_idx), data.select(test_idx)
    V = train.images.shape[1]
    yield Log(f"{len(train)} training shapes, {len(test)} held-out shapes, {V} views each, from "
              f"{', '.join(p.name for p in packs)}; heads {', '.join(heads)}; {model.num_parameters() / 1e6:.1f}M "
              f"parameters on {dev}")
    scored = scored_on(note)
    if note:
        yield Log(note, "warning")

    opt = (torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay > 0
           else torch.optim.Adam(model.parameters(), lr=cfg.lr))
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.mixed_precision and dev.type == "cuda")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator(dev).manual_seed(cfg.seed)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay else None
    preview_in = test.images[0, 0:1].float() / 255.0
    sums: dict[str, torch.Tensor] = {}
    tick, step = time.perf_counter(), 0
    for step in range(1, cfg.steps + 1):
        model.train()
        progress = schedule_progress(step, cfg.steps, time.perf_counter() - tick, cfg.max_seconds)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, step / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        images, occ, pts = training_batch(train, cfg, gen)
        with torch.autocast(**amp):
            out = model(images, heads)
        losses = training_losses(out, occ, pts, model, cfg, gen, progress)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if ema is not None:
            ema_update(ema, model, cfg.ema_decay, step - 1)
        for k, v in losses.items():
            sums[k] = sums.get(k, torch.zeros((), device=dev)) + v.detach()

        if step % LOG_EVERY == 0 or step == cfg.steps:
            n = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
            logged = {k: float(v) / n for k, v in sums.items()}  # one host sync per LOG_EVERY steps
            sums = {}
            if not math.isfinite(logged["loss"]):
                raise UserInputError(f"training diverged (loss {logged['loss']}) at step {step}: lower --lr")
            if ctx.preview_due(step):
                model.eval()
                with torch.no_grad(), torch.autocast(**amp):
                    pred = model(preview_in, heads)
                yield Preview(step, preview_images(preview_in[0], pred, model, cfg.voxel_threshold),
                              caption=f"{scored.split()[0]} shape {test.ids[0]}, step {step}")
            yield Progress(step, cfg.steps, {"loss": logged.pop("loss"), **logged})
        if cfg.max_seconds and time.perf_counter() - tick >= cfg.max_seconds:
            yield Log(f"stopped training at the {cfg.max_seconds:g}s budget after {step} steps")
            break
    train_seconds = time.perf_counter() - tick
    if ema is not None:
        model.load_state_dict(ema.state_dict())
        yield Log(f"scored and exported: the weights' moving average (decay {cfg.ema_decay:g})")

    model.eval()
    yield Log(f"scoring {len(test)} {scored}")
    metrics = evaluate(model, test, heads, cfg, dev)
    metrics.update(train_seconds=train_seconds, steps=float(step), train_shapes=float(len(set(train.ids))),
                   schedule_end=progress)  # 1: the lr and regularisers reached their ends
    if dev.type == "cuda":
        metrics["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
    yield Log(" · ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "@0.02" not in k and "@0.04" not in k))
    if cfg.export:
        model.trained_heads = heads
        folder = ctx.out_dir / "model"
        data_info = dict(packs=[p.name for p in packs], sources=cfg.sources, train_fraction=cfg.train_fraction,
                         train_shapes=len(set(train.ids)), train_entries=len(train),  # a shape in two render sets
                         heldout_shapes=0 if note else len(test), views=V)
        manifest = checkpoint_manifest(cfg, dev, data_info, metrics, len(test), scored)
        save_checkpoint(model, folder, cfg.weights_format, manifest, credits_meta=train.meta)
        yield ctx.artifact("checkpoint", folder / "config.json", "checkpoint (folder)")
        with torch.no_grad():
            pred = model(preview_in, heads)
        try:
            yield from export_prediction(ctx, model, preview_in[0], pred, cfg.voxel_threshold)
        except ImportError as e:  # a bare GPU machine without trimesh: the checkpoint is what matters there
            yield Log(f"prediction files not written ({e})", "warning")
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)


def _predict(cfg: SingleViewConfig, ctx: RunContext) -> Iterator[Event]:
    import torch

    from .core.single_view_net import load_checkpoint, prepare_image, preview_images

    started = time.perf_counter()
    folder = Path(cfg.checkpoint) if cfg.checkpoint else SHIPPED_MODEL
    if not (folder / "config.json").is_file():
        raise UserInputError("no trained checkpoint found" + (f" at {folder}" if cfg.checkpoint else
                             " (assets/single_view/model is not shipped yet)") +
                             ": train one with mode 'train' (CLI: python -m pipelines single_view --preset gpu)")
    if not cfg.image:
        raise UserInputError("give an image to reconstruct (--image PATH)")
    model, info = load_checkpoint(folder, ctx.device)
    cfg, notes = checkpoint_inference(cfg, model.manifest)
    image = prepare_image(cfg.image, model.image_size)
    heads = tuple(h for h in HEADS if h in model.trained_heads)
    yield Log(f"checkpoint: {info}")
    for note in notes:
        yield Log(note)
    x = image.permute(2, 0, 1)[None].to(ctx.device)
    pred = predict(model, x, heads, cfg)
    if cfg.mirror_heads:
        yield Log(f"{cfg.mirror_heads} combined with the prediction for the mirrored image (mirror_heads)")
    if cfg.point_jitters and "points" in pred:
        yield Log(f"points: the clouds of {cfg.point_jitters} jittered copies of the image added (point_jitters)")
    if cfg.mesh_from == "voxels":
        yield Log(f"mesh: the voxels above {cfg.voxel_threshold:g} cubified (Mesh R-CNN, mesh_from voxels)")
    if cfg.mesh_fit_steps and "mesh" in pred and "points" in pred:
        yield Log(f"mesh fitted to the point cloud: {cfg.mesh_fit_steps} steps, recall weight {cfg.mesh_fit_recall:g}, "
                  f"regularisers at {cfg.mesh_fit_reg:g}x")
    elif cfg.mesh_fit_steps:
        yield Log("this checkpoint has no point head (or no mesh head): the mesh is not fitted", "warning")
    yield Preview(1, preview_images(x[0], pred, model, cfg.voxel_threshold), caption="prediction")
    yield from export_prediction(ctx, model, x[0], pred, cfg.voxel_threshold)
    metrics = {}
    if "voxels" in pred:
        metrics["voxels_solid"] = float((torch.sigmoid(pred["voxels"].float()) > cfg.voxel_threshold).sum())
    yield Done(list(ctx.artifacts), metrics, time.perf_counter() - started)
