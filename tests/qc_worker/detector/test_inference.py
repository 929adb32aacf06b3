"""Inference: any size, batching equals one-by-one, tiles blend into the whole-image maps."""

import numpy as np
import pytest
import torch

from qc_worker.detector.checkpoint import CheckpointError, save_checkpoint
from qc_worker.detector.inference import Detector, InferenceConfig, _window
from qc_worker.detector.model import BlurDetector, ModelConfig

TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = BlurDetector(TINY)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model.eval(), thresholds={"pixel": 0.5}, dtype=torch.float32)
    return path


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_maps_match_each_image_whatever_its_size(checkpoint):
    det = Detector.load(checkpoint, device="cpu", precision="fp32")
    images = [_img(50, 70), _img(128, 96, 1), _img(1, 1, 2), _img(128, 96, 3)]
    preds = det.predict(images)
    assert [p.probability.shape for p in preds] == [(50, 70), (128, 96), (1, 1), (128, 96)]
    for p in preds:
        assert p.intensity.shape == p.probability.shape
        assert 0 <= p.probability.min() and p.probability.max() <= 1


def test_batched_equals_one_by_one(checkpoint):
    det = Detector.load(checkpoint, device="cpu", precision="fp32")
    images = [_img(96, 128, s) for s in range(3)]
    together = det.predict(images)
    for img, p in zip(images, together, strict=False):
        alone = det.predict([img])[0]
        np.testing.assert_allclose(p.probability, alone.probability, atol=1e-5)


def test_tiles_cover_the_image_and_blend_to_exact_weights(checkpoint, monkeypatch):
    """With a per-pixel stand-in for the network, tiling must reproduce it exactly: every
    pixel covered, overlapping tiles averaged with weights that sum to one."""
    tiled = Detector.load(
        checkpoint,
        device="cpu",
        precision="fp32",
        config=InferenceConfig(tile_above_pixels=100 * 100, tile=128, overlap=48, tile_batch=3),
    )
    local = lambda batch: (batch.mean(axis=3) / 255.0, batch[..., 0] / 255.0)
    monkeypatch.setattr(tiled, "_forward", local)
    img = _img(300, 410, 9)
    pred = tiled.predict([img])[0]
    np.testing.assert_allclose(pred.probability, img.mean(axis=2) / 255.0, atol=1e-5)
    np.testing.assert_allclose(pred.intensity, img[..., 0] / 255.0, atol=1e-5)


def test_tiled_inference_runs_the_real_network_on_large_images(checkpoint):
    det = Detector.load(
        checkpoint,
        device="cpu",
        config=InferenceConfig(tile_above_pixels=200 * 200, tile=192, overlap=64),
    )
    pred = det.predict([_img(333, 517, 4)])[0]
    assert pred.probability.shape == (333, 517) and np.isfinite(pred.probability).all()


def test_bf16_on_cpu_stays_close_to_fp32(checkpoint):
    img = _img(96, 96, 7)
    a = Detector.load(checkpoint, device="cpu", precision="fp32").predict([img])[0].probability
    b = Detector.load(checkpoint, device="cpu", precision="bf16").predict([img])[0].probability
    assert np.abs(a - b).mean() < 0.02


def test_blend_window_is_smooth_and_positive():
    w = _window(128, 32)
    assert w.min() > 0 and w[40:88].min() == 1.0
    assert np.abs(np.diff(w)).max() < 0.06


def test_a_bad_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        Detector.load(bad, device="cpu")


def test_non_rgb_input_is_refused(checkpoint):
    det = Detector.load(checkpoint, device="cpu")
    with pytest.raises(ValueError, match="RGB uint8"):
        det.predict([np.zeros((10, 10), np.uint8)])


@pytest.mark.parametrize(
    "avx512_bf16,amx,expected",
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)],
)
def test_auto_precision_takes_bf16_on_the_cpu_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    from qc_worker.detector.inference import cpu_has_fast_bf16, pick_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_fast_bf16() is (expected is not None)
    cpu = torch.device("cpu")
    assert pick_dtype(cpu, "auto") == expected
    # An explicit choice is obeyed whatever the hardware.
    assert pick_dtype(cpu, "bf16") == torch.bfloat16 and pick_dtype(cpu, "fp32") is None


def test_the_model_versions_thresholds_are_read_with_their_defaults(tmp_path):
    """Screening, calibrate --frozen and bench/pipeline.py read the pixel and frame thresholds
    through the detector: a calibrated checkpoint's own, else pixel 0.5 and no frame rule."""
    model = BlurDetector(TINY).eval()
    save_checkpoint(tmp_path / "cal.safetensors", model, thresholds={"pixel": 0.3, "frame": 0.05})
    save_checkpoint(tmp_path / "raw.safetensors", model, thresholds={})
    calibrated = Detector.load(tmp_path / "cal.safetensors", device="cpu")
    raw = Detector.load(tmp_path / "raw.safetensors", device="cpu")
    assert (calibrated.pixel_threshold, calibrated.frame_threshold) == (0.3, 0.05)
    assert (raw.pixel_threshold, raw.frame_threshold) == (0.5, None)


def test_the_checkpoints_frame_scales_add_the_maps_of_smaller_copies(checkpoint, tmp_path):
    """A checkpoint whose frame rule reads the frame at 1x and 0.5x gets, with each image's
    full-size maps (unchanged), the probability map of its half-size copy."""
    import cv2

    from qc_worker.detector.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint, device="cpu")
    two = tmp_path / "two.safetensors"
    save_checkpoint(two, model, thresholds={"pixel": 0.5, "frame_scales": [1.0, 0.5]}, dtype=torch.float32)
    det = Detector.load(two, device="cpu", precision="fp32")
    assert det.frame_scales == (1.0, 0.5)
    single = Detector.load(two, device="cpu", precision="fp32", config=InferenceConfig(frame_scales=(1.0,)))
    images = [_img(96, 128, 5), _img(50, 70, 6)]
    both = det.predict(images)
    for img, p, alone in zip(images, both, single.predict(images), strict=True):
        np.testing.assert_allclose(p.probability, alone.probability, atol=1e-6)
        assert alone.coarse == {}
        h, w = img.shape[:2]
        half = single.predict([cv2.resize(img, (round(w / 2), round(h / 2)), interpolation=cv2.INTER_AREA)])[0]
        assert set(p.coarse) == {0.5}
        np.testing.assert_allclose(p.coarse[0.5], half.probability, atol=1e-6)
    assert Detector.load(checkpoint, device="cpu").frame_scales == (1.0,)
