"""A checkpoint's test-time settings travel with it (issue 21): predict takes the voxel threshold, mesh fitting and
mirroring its manifest's scores were measured with, wherever the config left them at their defaults."""
import dataclasses
import json

import pytest

from pipelines import UserInputError
from pipelines.core.single_view_outputs import checkpoint_inference, manifest_inference
from pipelines.events import Done, Log
from pipelines.single_view import SHIPPED_MODEL, SingleViewConfig, run

AS_PREDICTED = {"metrics": {"voxels_iou": 0.46}, "scored_on": "83 shapes x 2 views",
                "inference": {"mirror_heads": "points", "mesh_fit_steps": 100, "mesh_fit_recall": 4.0,
                              "voxel_threshold": 0.7}}


def test_defaults_take_the_checkpoints_settings_and_given_values_stay():
    cfg, notes = checkpoint_inference(SingleViewConfig(), {"scores_as_predicted": AS_PREDICTED})
    assert (cfg.voxel_threshold, cfg.mesh_fit_steps, cfg.mesh_fit_recall, cfg.mirror_heads) == (0.7, 100, 4.0, "points")
    assert notes == ["the checkpoint's test-time settings: mesh_fit_steps 100, mesh_fit_recall 4.0, voxel_threshold 0.7"]
    given = SingleViewConfig(voxel_threshold=0.6, mirror_heads="")
    cfg, notes = checkpoint_inference(given, {"scores_as_predicted": AS_PREDICTED})
    assert (cfg.voxel_threshold, cfg.mesh_fit_steps, cfg.mesh_fit_recall, cfg.mirror_heads) == (0.6, 100, 4.0, "")
    assert "kept as given: mirror_heads '' (the checkpoint's: 'points'), voxel_threshold 0.6 (the checkpoint's: 0.7)" in notes[1]
    off = SingleViewConfig(checkpoint_inference=False)
    assert checkpoint_inference(off, {"scores_as_predicted": AS_PREDICTED}) == (off, [])
    # a manifest written by training says how its own scores were predicted; none: the config as it is
    cfg, _ = checkpoint_inference(SingleViewConfig(), {"inference": {"mesh_fit_steps": 20}})
    assert cfg.mesh_fit_steps == 20 and cfg.voxel_threshold == SingleViewConfig.voxel_threshold
    assert checkpoint_inference(SingleViewConfig(), {}) == (SingleViewConfig(), [])


@pytest.mark.parametrize("inference", [None, [], {"voxel_threshold": None}, {"mesh_fit_steps": 100.7},
                                       {"mirror_heads": None}, {"voxel_threshold": "0.7"}, {"mesh_fit_steps": True}])
def test_a_broken_manifest_says_so_and_the_status_line_survives_it(inference):
    """Hand-edited or foreign manifests: predict stops with what to fix; the tab's status reads what it can."""
    manifest = {"inference": inference}
    settings, problems = manifest_inference(manifest)
    if inference is None:  # no settings recorded: nothing to take, nothing wrong
        assert (settings, problems) == ({}, [])
        return
    assert settings == {} and problems
    with pytest.raises(UserInputError, match="--no-checkpoint-inference"):
        checkpoint_inference(SingleViewConfig(), manifest)
    assert checkpoint_inference(SingleViewConfig(checkpoint_inference=False), manifest)[1] == []
    for odd in ([], "text", {"scores_as_predicted": "x", "inference": {"voxel_threshold": 0.6}}):
        assert manifest_inference(odd)[0] == ({"voxel_threshold": 0.6} if isinstance(odd, dict) else {})


def test_the_status_line_names_the_settings_and_skips_a_broken_one(tmp_path, monkeypatch):
    from gen3d_app.tabs import single_view as tab

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    monkeypatch.setattr(tab, "ASSETS", tmp_path)
    for manifest, said in (({"inference": {"voxel_threshold": "high", "mesh_fit_steps": 50}}, "(50 steps)"),
                           ([1, 2], "see manifest.json")):
        (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
        status = tab.model_status()
        assert said in status and "high" not in status


def test_predict_uses_the_shipped_models_settings(tmp_path):
    """The shipped manifest's settings reach the prediction: its voxel threshold changes the solid count, and
    predict says which settings it took."""
    want = json.loads((SHIPPED_MODEL / "manifest.json").read_text())["scores_as_predicted"]["inference"]
    image = sorted((SHIPPED_MODEL.parent / "examples").glob("*.png"))[0]
    base = SingleViewConfig(mode="predict", image=str(image), device="cpu")
    done, logs = {}, {}
    for on in (True, False):
        events = list(run(dataclasses.replace(base, checkpoint_inference=on, out_dir=str(tmp_path / str(on)))))
        done[on] = next(e for e in events if isinstance(e, Done))
        logs[on] = " ".join(e.message for e in events if isinstance(e, Log))
    assert f"voxel_threshold {want['voxel_threshold']}" in logs[True] and "test-time settings" not in logs[False]
    assert (f"mesh fitted to the point cloud: {want['mesh_fit_steps']} steps" in logs[True]) == (
        want["mesh_fit_steps"] > 0)
    higher = want["voxel_threshold"] > SingleViewConfig.voxel_threshold
    assert (done[True].metrics["voxels_solid"] < done[False].metrics["voxels_solid"]) == higher
    meshes = [(tmp_path / str(on) / "mesh.glb").read_bytes() for on in (True, False)]
    assert (meshes[0] != meshes[1]) == (want["mesh_fit_steps"] > 0)


def test_a_shape_in_two_render_sets_counts_once(tmp_path):
    """The manifest's train_shapes counts shapes, train_entries what training drew from (the same pack twice: 2x)."""
    mini = SHIPPED_MODEL.parent / "mini.npz"
    cfg = SingleViewConfig(data=f"{mini},{mini}", sources="all", steps=1, batch_size=2, image_size=32, width=8,
                           hidden=32, n_points=64, ico_level=2, gt_points=128, eval_views=1, mixed_precision=False,
                           device="cpu", out_dir=str(tmp_path))
    events = list(run(cfg))
    assert isinstance(events[-1], Done), events[-1]
    data = json.loads((tmp_path / "model" / "manifest.json").read_text())["data"]
    assert (data["train_shapes"], data["train_entries"]) == (16, 32)


def test_a_manifest_that_is_not_an_object_is_refused_on_load(tmp_path):
    from pipelines.core.single_view_net import SingleViewModel, load_checkpoint, save_checkpoint

    save_checkpoint(SingleViewModel(image_size=32, width=8, hidden=32, n_points=64, ico_level=2, resolution=8),
                    tmp_path, "float16", {"data": {}})
    assert "data" in load_checkpoint(tmp_path)[0].manifest
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match="not a JSON object"):
        load_checkpoint(tmp_path)
