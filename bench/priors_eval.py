"""The embedded priors on held-out shapes: retrieval with the image-text scorer (text -> image and image -> text,
top-1 / top-5), and the diffusion prior's samples for held-out captions judged by that scorer next to real
renders of the same captions (with a sample grid), the numbers issue 5 asks for.

    python bench/priors_eval.py scorer --data .data/priors/priors.npz          # the shipped assets/priors/clip
    python bench/priors_eval.py scorer --folder runs/priors/clip-export --json bench/results/x.json
    python bench/priors_eval.py diffusion --n 32 --grid bench/results/priors_samples.png
    python bench/priors_eval.py dreamfusion --renders R.pt      # DreamFusion on 10 prompts (a GPU), then
    python bench/priors_eval.py dreamfusion --judge R*.pt       # its renders ranked by the scorer
    python bench/priors_eval.py texts --out T                  # the prompts' text states, for a GPU machine
                                                               # without the text encoder: GEN3D_TEXT_ENCODER=T

Held out = the shapes the data builder put in the test split (a hash of the shape id), never trained on. Each
shape is queried by its plain caption ("a red armchair"); a retrieved shape counts as a hit when that caption
is one of its own (two held-out chairs may share "a chair"). Renders are on white, as the scorer saw half of
its training images. Scores are averaged over the 12 views. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import device_name, print_table


def scorer_retrieval(scorer, data, ks=(1, 5)) -> dict:
    """Text -> image and image -> text top-k over the held-out shapes, averaged over views."""
    import torch

    test = data.test
    caps = data.shape_caps[test]  # (S, K) caption indices, -1 padded
    query = caps[:, 0]  # each shape's plain caption
    uniq = sorted(set(query.tolist()))
    # owns[q, s]: shape s has caption uniq[q] among its captions (duplicates across shapes count as hits)
    owns = torch.stack([(caps == c).any(1) for c in uniq])
    text = scorer.encode_text([data.captions[c] for c in uniq])  # (Q, E)
    t2i = {k: [] for k in ks}
    i2t = {k: [] for k in ks}
    with torch.no_grad():
        for v in range(data.rgba.shape[1]):
            x = data.rgba[test.to(data.rgba.device), v].float() / 255
            img = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
            sims = (scorer.encode_images(img) @ text.T).cpu()  # (S, Q)
            q_of_shape = torch.tensor([uniq.index(c) for c in query.tolist()])
            for k in ks:
                # text -> image: for each distinct caption, are any of its top-k shapes owners of it?
                top_s = sims.T.topk(min(k, sims.shape[0]), dim=1).indices  # (Q, k)
                t2i[k].append(float(torch.gather(owns, 1, top_s).any(1).float().mean()))
                # image -> text: is the shape's own plain caption among its top-k captions?
                top_q = sims.topk(min(k, sims.shape[1]), dim=1).indices  # (S, k)
                i2t[k].append(float((top_q == q_of_shape[:, None]).any(1).float().mean()))
    n_shapes, n_caps = len(test), len(uniq)
    out = {"heldout_shapes": n_shapes, "distinct_captions": n_caps, "views": int(data.rgba.shape[1])}
    for k in ks:
        out[f"text_to_image_top{k}"] = sum(t2i[k]) / len(t2i[k])
        out[f"image_to_text_top{k}"] = sum(i2t[k]) / len(i2t[k])
        owners = owns.float().sum(1)  # a random ranking hits with prob 1 - C(S - o, k) / C(S, k)
        out[f"text_to_image_top{k}_chance"] = float(sum(1 - _none_in_top(n_shapes, int(o), k) for o in owners)
                                                    / len(owners))
        out[f"image_to_text_top{k}_chance"] = min(1.0, k / n_caps)
    return out


def diffusion_judged(guidance, scorer, data, n: int, steps: int, scale: float, seed: int = 0):
    """Samples for the plain captions of ``n`` held-out shapes (evenly spaced), judged by the scorer among all
    distinct held-out plain captions: caption top-1, and category top-1 (the chosen caption belongs to a shape
    of the same catalog category); the same for a real render (view 0, on white) of each shape.
    Returns (metrics, samples (n, r, r, 3), real (n, r, r, 3), prompts)."""
    import torch

    test = data.test
    query = data.shape_caps[test, 0].tolist()
    uniq = sorted(set(query))
    cat_of = {}
    for i, c in zip(test.tolist(), query):
        cat_of.setdefault(c, set()).add(data.meta[data.ids[i]].get("category", ""))
    picks = [int(i) for i in torch.linspace(0, len(test) - 1, min(n, len(test))).round().long().tolist()]
    prompts = [data.captions[query[i]] for i in picks]
    samples = guidance.sample(prompts, steps=steps, guidance_scale=scale, seed=seed).cpu()
    x = data.rgba[test[picks].to(data.rgba.device), 0].float().cpu() / 255
    real = x[..., :3] * x[..., 3:] + (1 - x[..., 3:])
    text = scorer.encode_text([data.captions[c] for c in uniq])
    out = {"prompts": len(prompts), "candidates": len(uniq), "ddim_steps": steps, "guidance_scale": scale}
    for name, images in (("samples", samples), ("real", real)):
        with torch.no_grad():
            best = (scorer.encode_images(images.to(scorer.device)) @ text.T).argmax(1).cpu().tolist()
        hits = [uniq[b] == query[i] for b, i in zip(best, picks)]
        same_cat = [bool(cat_of[uniq[b]] & cat_of[query[i]]) for b, i in zip(best, picks)]
        out[f"{name}_caption_top1"] = sum(hits) / len(hits)
        out[f"{name}_category_top1"] = sum(same_cat) / len(same_cat)
    cats = [min(cat_of[q]) for q in query]  # min: the same pick in every process
    out["category_chance"] = sum(cats.count(c) ** 2 for c in set(cats)) / len(cats) ** 2 if cats else 0.0
    out["caption_chance"] = 1.0 / len(uniq)
    return out, samples, real, prompts


DREAMFUSION_PROMPTS = ["a chair", "a table", "a lamp", "a sofa", "a cabinet", "a bed", "a desk", "a plant",
                      "a bottle", "a box"]
"""Ten of the most frequent object nouns of the training captions: each run's prompt and the candidates."""


def render_student(run_dir: Path, n_views: int, size: int, device):
    """Albedo renders (n_views, size, size, 3) on white of a DreamFusion run's student (its model.pt), around
    the object at 15 degrees of elevation, at the run's middle camera distance and field of view."""
    import math

    import torch

    from pipelines.core.cameras import look_at, spherical_to_cartesian
    from pipelines.core.rays import pixel_rays
    from pipelines.core.text3d import render_shaded
    from pipelines.dreamfusion import DreamFusionConfig, build_student

    state = torch.load(run_dir / "model.pt", map_location=device, weights_only=False)
    cfg = DreamFusionConfig(**state["config"])
    student, _ = build_student(cfg)
    student.load_state_dict(state["student"])
    student.to(device).eval()
    dist = 0.5 * (cfg.camera_distance_min + cfg.camera_distance_max)
    fov = 0.5 * (cfg.fov_min + cfg.fov_max)
    j, i = torch.meshgrid(torch.arange(size, device=device) + 0.5, torch.arange(size, device=device) + 0.5,
                          indexing="ij")
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    views = []
    for k in range(n_views):
        c2w = look_at(spherical_to_cartesian(dist, math.radians(15.0), 2 * math.pi * k / n_views)).to(device)
        o, d = pixel_rays(c2w, i.reshape(-1), j.reshape(-1), f, f, size / 2, size / 2)
        with torch.no_grad():
            out = render_shaded(student, o, d, torch.ones(3, device=device), cfg.n_samples, cfg.n_importance)
        views.append(out["rgb"].reshape(size, size, 3))
    return torch.stack(views)


def dreamfusion_renders(prior: str, prompts: list[str], steps: int, scale: float, preset: str, out_dir: Path,
                        device, n_views: int = 8, size: int = 64, seed: int = 0) -> dict:
    """A DreamFusion run per prompt with the given prior; returns {prompt: uint8 renders (n_views, size, size, 3)}
    of its student (``render_student``) and keeps each run's folder (mesh, checkpoint) under ``out_dir``."""
    import dataclasses

    from pipelines.dreamfusion import DreamFusionConfig, run
    from pipelines.events import run_to_completion

    out = {}
    for prompt in prompts:
        cfg = DreamFusionConfig(prompt=prompt, prior=prior, device=str(device), seed=seed, preview_every=10 ** 9,
                                turntable_frames=0)
        if preset:
            cfg = cfg.with_preset(preset)
        slug = "".join(c if c.isalnum() else "-" for c in prompt)
        cfg = dataclasses.replace(cfg, steps=steps, guidance_scale=scale, out_dir=str(out_dir / slug))
        done = run_to_completion(run(cfg))
        run_dir = next(Path(a.path).parent for a in done.artifacts if Path(a.path).name == "model.pt")
        out[prompt] = (render_student(run_dir, n_views, size, device).clamp(0, 1) * 255).round().byte().cpu()
        print(f"{prompt!r}: {int(done.metrics['steps'])} steps in {done.metrics['train_seconds']:.1f}s, "
              f"{int(done.metrics.get('mesh_faces', 0))} mesh faces", flush=True)
    return out


def rank_renders(scorer, prompts: list[str], renders: dict) -> tuple[dict, list]:
    """Each run's renders judged by the scorer among all ``prompts``: rank-1 when the run's own prompt has the
    highest cosine averaged over its views. Returns (metrics, per-prompt rows)."""
    import torch

    text = scorer.encode_text(prompts)
    rows = []
    for prompt, views in renders.items():
        n = prompts.index(prompt)
        with torch.no_grad():
            sims = (scorer.encode_images(views.float().to(scorer.device) / 255) @ text.T).cpu()  # (views, prompts)
        mean = sims.mean(0)
        others = mean.masked_fill(torch.arange(len(prompts)) == n, float("-inf"))
        rows.append({"prompt": prompt, "rank": int((mean > mean[n]).sum()) + 1,
                     "views_top1": float((sims.argmax(1) == n).float().mean()),
                     "best_other": prompts[int(others.argmax())]})
    metrics = {"prompts": len(rows), "rank1_rate": sum(r["rank"] == 1 for r in rows) / max(1, len(rows)),
               "views_top1": sum(r["views_top1"] for r in rows) / max(1, len(rows)), "chance": 1.0 / len(prompts)}
    return metrics, rows


def save_grid(path: Path, samples, real, cols: int = 8) -> None:
    """Pairs (sample, real render) side by side, ``cols`` pairs a row, 2 px white gaps."""
    import numpy as np
    from PIL import Image

    n, r = samples.shape[0], samples.shape[1]
    rows = (n + cols - 1) // cols
    grid = np.ones((rows * (r + 2), cols * (2 * r + 6), 3), np.float32)
    for i in range(n):
        y, x = (i // cols) * (r + 2), (i % cols) * (2 * r + 6)
        grid[y:y + r, x:x + r] = samples[i].numpy()
        grid[y:y + r, x + r + 1:x + 2 * r + 1] = real[i].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)


def save_rows(path: Path, images) -> None:
    """(P, V, r, r, 3) in [0, 1] as a grid: a row per prompt, 2 px white gaps."""
    import numpy as np
    from PIL import Image

    p, v, r = images.shape[:3]
    grid = np.ones((p * (r + 2), v * (r + 2), 3), np.float32)
    for i in range(p):
        for j in range(v):
            grid[i * (r + 2):i * (r + 2) + r, j * (r + 2):j * (r + 2) + r] = images[i, j].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(path)


def _none_in_top(n: int, owners: int, k: int) -> float:
    """Probability that none of ``owners`` items out of ``n`` lands in a random top-k."""
    p = 1.0
    for i in range(min(k, n)):
        p *= max(0, n - owners - i) / (n - i)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scorer", help="retrieval on held-out shapes with the embedded scorer")
    s.add_argument("--data", default=".data/priors/priors.npz")
    s.add_argument("--folder", default="", help="a scorer folder (default: the shipped assets/priors/clip)")
    s.add_argument("--device", default="auto")
    s.add_argument("--json", default="bench/results/priors_scorer_retrieval.json")
    d = sub.add_parser("diffusion", help="samples for held-out captions, judged by the scorer, and a grid")
    d.add_argument("--data", default=".data/priors/priors.npz")
    d.add_argument("--folder", default="", help="a diffusion prior folder (default: assets/priors/diffusion)")
    d.add_argument("--scorer-folder", default="", help="the judge (default: assets/priors/clip)")
    d.add_argument("--n", type=int, default=32, help="held-out captions to sample")
    d.add_argument("--steps", type=int, default=50, help="DDIM steps")
    d.add_argument("--scale", type=float, default=3.0, help="classifier-free guidance scale")
    d.add_argument("--device", default="auto")
    d.add_argument("--grid", default="bench/results/priors_samples.png")
    d.add_argument("--json", default="bench/results/priors_diffusion_samples.json")
    f = sub.add_parser("dreamfusion", help="DreamFusion with the embedded prior on 10 prompts; its renders ranked "
                                           "by the scorer among the prompts (rank-1 rate)")
    f.add_argument("--folder", default="", help="a diffusion prior folder (default: assets/priors/diffusion)")
    f.add_argument("--scorer-folder", default="", help="the judge (default: assets/priors/clip)")
    f.add_argument("--prompts", nargs="+", default=DREAMFUSION_PROMPTS)
    f.add_argument("--only", type=int, nargs="*", default=None,
                   help="run only these prompt indices (judged among all prompts; to split the work over GPUs)")
    f.add_argument("--steps", type=int, default=2000)
    f.add_argument("--scale", type=float, default=100.0, help="classifier-free guidance scale")
    f.add_argument("--preset", default="fast")
    f.add_argument("--device", default="auto")
    f.add_argument("--out-dir", default="outputs/bench/dreamfusion-embedded")
    f.add_argument("--renders", default="", help="save the renders here (.pt) and do not judge (judge them later, "
                                                 "e.g. where the scorer's text encoder is installed, with --judge)")
    f.add_argument("--judge", nargs="*", default=[], help="judge saved renders (.pt files) instead of running")
    f.add_argument("--json", default="bench/results/dreamfusion_embedded_rank.json")
    t = sub.add_parser("texts", help="a states table of the dreamfusion prompts (all views, and the empty negative "
                                     "prompt), to run them where the text encoder is absent: GEN3D_TEXT_ENCODER=OUT")
    t.add_argument("--prompts", nargs="+", default=DREAMFUSION_PROMPTS)
    t.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "texts":
        from pipelines.core.priors.prompts import VIEWS, view_prompt
        from pipelines.core.priors.text_encoder import save_states_table

        texts = [""] + args.prompts + [view_prompt(p, v) for p in args.prompts for v in VIEWS]
        print(f"wrote {save_states_table(texts, args.out)} ({len(texts)} texts)")
        return

    import torch

    from pipelines.config import resolve_device
    from pipelines.core.priors.embedded import load_embedded_scorer
    from pipelines.train.priors_dataset import load_data

    dev = resolve_device(args.device)
    t0 = time.perf_counter()
    if args.cmd == "dreamfusion":
        prior = str(Path(args.folder).resolve()) if args.folder else "embedded"
        if args.judge:
            renders = {}
            for f in args.judge:
                renders.update(torch.load(f, weights_only=False))
        else:
            prompts = args.prompts if args.only is None else [args.prompts[i] for i in args.only]
            renders = dreamfusion_renders(prior, prompts, args.steps, args.scale, args.preset, Path(args.out_dir), dev)
            if args.renders:
                Path(args.renders).parent.mkdir(parents=True, exist_ok=True)
                torch.save(renders, args.renders)
                print(f"wrote {args.renders}")
                return
        res, rows = rank_renders(load_embedded_scorer(dev, folder=args.scorer_folder or None), args.prompts, renders)
        res.update(seconds=time.perf_counter() - t0, device=device_name(), torch=torch.__version__, prior=prior,
                   steps=args.steps, guidance_scale=args.scale, preset=args.preset, rows=rows,
                   date=time.strftime("%Y-%m-%d"))
        print_table(rows, [("prompt", "prompt", 12), ("rank", "rank", 5), ("views_top1", "views top-1", 12),
                           ("best_other", "best other", 12)])
        print(f"rank-1 rate {res['rank1_rate']:.2f} over {len(rows)} prompts (chance {res['chance']:.2f})")
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        save_rows(out.with_suffix(".png"), torch.stack([renders[r["prompt"]] for r in rows]).float() / 255)
        print(f"wrote {out} and {out.with_suffix('.png')}")
        return
    data = load_data(args.data, dev)
    if args.cmd == "diffusion":
        from pipelines.core.priors.embedded import load_embedded_guidance

        guidance = load_embedded_guidance(dev, folder=args.folder or None)
        scorer = load_embedded_scorer(dev, folder=args.scorer_folder or None)
        res, samples, real, prompts = diffusion_judged(guidance, scorer, data, args.n, args.steps, args.scale)
        save_grid(Path(args.grid), samples, real)
        res.update(seconds=time.perf_counter() - t0, device=device_name(), torch=torch.__version__,
                   prior=str(args.folder or "assets/priors/diffusion"), grid=args.grid, prompt_list=prompts,
                   date=time.strftime("%Y-%m-%d"))
        print(f"{res['prompts']} held-out captions, judged among {res['candidates']}; grid (sample | real) "
              f"-> {args.grid}")
        rows = [{"images": k, "caption top-1": res[f"{k}_caption_top1"], "category top-1": res[f"{k}_category_top1"]}
                for k in ("samples", "real")]
        print_table(rows, [("images", "images", 10), ("caption top-1", "caption top-1", 14),
                           ("category top-1", "category top-1", 15)])
        print(f"chance: caption {res['caption_chance']:.3f}, category {res['category_chance']:.3f}")
        Path(args.json).write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
        return
    scorer = load_embedded_scorer(dev, folder=args.folder or None)
    res = scorer_retrieval(scorer, data)
    res.update(seconds=time.perf_counter() - t0, device=device_name(), torch=torch.__version__,
               scorer=str(args.folder or "assets/priors/clip"), data=Path(args.data).name, data_sha256=data.sha256,
               date=time.strftime("%Y-%m-%d"))
    rows = [{"direction": d, "top1": res[f"{d}_top1"], "top1_chance": res[f"{d}_top1_chance"],
             "top5": res[f"{d}_top5"], "top5_chance": res[f"{d}_top5_chance"]}
            for d in ("text_to_image", "image_to_text")]
    for r in rows:
        for k in ("top1", "top1_chance", "top5", "top5_chance"):
            r[k] = round(r[k], 3)
    print(f"{res['heldout_shapes']} held-out shapes, {res['distinct_captions']} distinct captions, "
          f"{res['views']} views each")
    print_table(rows, [("direction", "direction", 14), ("top1", "top-1", 7), ("top1_chance", "chance", 7),
                       ("top5", "top-5", 7), ("top5_chance", "chance", 7)])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
