"""Files a person takes home: meshes (.glb/.obj via trimesh), point clouds (.ply), images and turntables.

Contract: every writer takes our own containers or uint8 HxWx3 frames and a path inside the run folder,
and returns that path. trimesh and imageio are imported here only, when a file is written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .geometry import Mesh, PointCloud


def _trimesh(mesh: Mesh):
    import trimesh

    colors = None
    if mesh.vert_colors is not None:
        rgb = (mesh.vert_colors.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    tm = trimesh.Trimesh(vertices=mesh.verts.detach().float().cpu().numpy(),
                         faces=mesh.faces.detach().cpu().numpy(), vertex_colors=colors, process=False)
    if mesh.uv is not None and mesh.texture is not None:
        from PIL import Image

        image = Image.fromarray((mesh.texture.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
        tm.visual = trimesh.visual.TextureVisuals(uv=mesh.uv.detach().float().cpu().numpy(), material=material)
    return tm


def save_mesh(mesh: Mesh, path: str | Path, up: str = "z") -> Path:
    """Writes ``.glb`` (what gr.Model3D shows, vertex colours kept) or ``.obj`` by the path's suffix.

    ``up``: the mesh's up axis. Scenes are z-up (Blender) and glTF is y-up, so .glb files are rotated -90 degrees
    about x on the way out; ``up="y"`` (a forward-facing capture's frame: the average camera's, y up, looking down
    -z) is written as it is, so the viewer shows it from the cameras' side instead of from above.
    """
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    path = Path(path)
    tm = _trimesh(mesh)
    if path.suffix == ".glb" and up == "z":
        tm.apply_transform(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64))
    tm.export(path)
    return path


def save_textured_obj(mesh: Mesh, path: str | Path) -> list[Path]:
    """A textured mesh as ``.obj`` + ``.mtl`` + ``.png`` side by side (named after the .obj); returns the three
    paths. Unlike ``save_mesh``, no axis change: .obj files keep the scene's z-up (Blender asks on import)."""
    import trimesh

    path = Path(path)
    tm = _trimesh(mesh)
    image = tm.visual.material.baseColorTexture
    # white diffuse and ambient, no specular: viewers that multiply Kd by map_Kd show the texture as baked
    tm.visual.material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255),
                                                                ambient=(255, 255, 255, 255),
                                                                specular=(0, 0, 0, 255), name=path.stem)
    text, files = trimesh.exchange.obj.export_obj(tm, include_texture=True, return_texture=True,
                                                  mtl_name=f"{path.stem}.mtl")
    path.write_text(text)
    written = [path]
    for name, data in files.items():
        (path.parent / name).write_bytes(data)
        written.append(path.parent / name)
    return written


def save_point_cloud(pc: PointCloud, path: str | Path) -> Path:
    """``.ply`` with per-point colours."""
    import trimesh

    colors = None
    if pc.rgb is not None:
        colors = (pc.rgb.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    trimesh.PointCloud(pc.xyz.detach().float().cpu().numpy(), colors=colors).export(path)
    return Path(path)


def save_image(img: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    Image.fromarray(img).save(path)
    return Path(path)


def save_video(frames: list[np.ndarray], path: str | Path, fps: int = 24) -> Path:
    """H.264 ``.mp4`` (browser-playable); frame sides are padded to even sizes as yuv420p needs."""
    import imageio.v2 as imageio

    h, w = frames[0].shape[:2]
    ph, pw = h % 2, w % 2
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                            macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else f)
    return Path(path)
