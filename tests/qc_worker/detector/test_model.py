"""The detector module: any input size, the frequency channel, encoder initialisation."""

import cv2
import numpy as np
import pytest
import torch
import torchvision

from qc_worker.detector.frequency import BlurFrequency
from qc_worker.detector.model import BlurDetector, ModelConfig, build_model, fold_batchnorm, load_encoder_weights

TINY = ModelConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8))


@pytest.mark.parametrize("h,w", [(64, 64), (97, 130), (33, 250)])
def test_any_input_size_gives_maps_of_the_same_size(h, w):
    model = BlurDetector(TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, h, w))
    assert out.logits.shape == out.intensity.shape == (2, 1, h, w)
    assert out.aux == []
    assert 0 <= float(out.intensity.min()) and float(out.intensity.max()) <= 1


@pytest.mark.parametrize("encoder", ["resnet18", "mobilenet_v2", "efficientnet-lite0"])
def test_folding_batchnorm_keeps_the_maps_and_leaves_no_norm(encoder):
    model = BlurDetector(ModelConfig(encoder=encoder, decoder_channels=(32, 16, 16, 8, 8)))
    # Non-trivial running statistics, as a trained model has.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.rand(2, 3, 96, 80)
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    torch.testing.assert_close(after.logits, before.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after.intensity, before.intensity, atol=1e-5, rtol=1e-4)


def test_folding_batchnorm_refuses_a_model_in_training():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(BlurDetector(TINY).train())


def test_aux_heads_run_only_in_training_or_when_asked():
    model = BlurDetector(TINY).train()
    out = model(torch.rand(1, 3, 64, 64))
    assert [a.shape[-1] for a in out.aux] == [8, 16, 32]
    model.eval()
    assert len(model(torch.rand(1, 3, 64, 64), with_aux=True).aux) == 3


def test_frequency_channel_drops_where_the_image_is_motion_blurred():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.random((128, 128, 3)).astype(np.float32), (256, 256), interpolation=cv2.INTER_CUBIC)
    k = np.zeros((1, 15), np.float32)
    k[:] = 1 / 15
    blurred = img.copy()
    blurred[:, 128:] = cv2.filter2D(img, -1, k)[:, 128:]
    f = BlurFrequency()(torch.from_numpy(blurred).permute(2, 0, 1)[None])[0, 0]
    assert float(f[:, 20:108].mean()) > float(f[:, 148:236].mean()) + 0.5
    # Contrast-invariant: halving the contrast leaves the channel nearly unchanged.
    g = BlurFrequency()(torch.from_numpy(0.25 + 0.5 * blurred).permute(2, 0, 1)[None])[0, 0]
    assert float((f - g).abs()[:, 20:108].mean()) < 0.25


def test_frequency_channel_has_no_trainable_parameters():
    assert list(BlurFrequency().parameters()) == []
    assert all("frequency" not in n for n, _ in BlurDetector(TINY).named_parameters())


def test_encoder_weights_load_from_a_local_torchvision_file(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-local.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(ModelConfig(encoder="resnet18", decoder_channels=TINY.decoder_channels), path)
    assert model.config.encoder_init.startswith("imagenet:resnet18-local.pth:")
    w = model.encoder.conv1.weight
    assert w.shape[1] == 4
    torch.testing.assert_close(w[:, :3], ref.conv1.weight)
    torch.testing.assert_close(w[:, 3], ref.conv1.weight.mean(dim=1))
    torch.testing.assert_close(model.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_without_weights_the_encoder_is_random_and_says_so(caplog):
    model = build_model(TINY)
    assert model.config.encoder_init == "random"
    assert "random initialisation" in caplog.text


def test_wrong_weights_files_are_refused(tmp_path):
    other = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), other)
    with pytest.raises(ValueError, match="does not look like resnet18"):
        load_encoder_weights(BlurDetector(TINY), other)
    with pytest.raises(FileNotFoundError):
        load_encoder_weights(BlurDetector(TINY), tmp_path / "missing.pth")


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown encoder"):
        BlurDetector(ModelConfig(encoder="vgg11"))


def test_packaged_imagenet_weights_are_found_by_name_and_recorded_with_their_sha256():
    from qc_worker.detector.pretrained import KNOWN_WEIGHTS

    known = KNOWN_WEIGHTS["mobilenet_v2"]
    assert known.locate() is not None, "run `make train-weights` (part of the venv)"
    model = build_model(ModelConfig(encoder="mobilenet_v2", decoder_channels=(16, 16, 8, 8, 8)), "imagenet")
    assert model.config.encoder_init == f"imagenet:mobilenet_v2-b0353104.pth:{known.sha256}"
    ref = torch.load(known.locate(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.encoder.features[5].conv[1][0].weight, ref["features.5.conv.1.0.weight"])


def test_a_file_with_the_known_name_but_other_bytes_is_refused(tmp_path):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), fake)
    with pytest.raises(ValueError, match="sha256"):
        build_model(ModelConfig(encoder="mobilenet_v2", decoder_channels=(16, 16, 8, 8, 8)), fake)


def test_imagenet_for_an_encoder_without_packaged_weights_says_so():
    with pytest.raises(ValueError, match="no packaged ImageNet weights"):
        build_model(TINY, "imagenet")


def test_mismatched_shapes_name_the_tensor(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight has shape"):
        load_encoder_weights(BlurDetector(TINY), path)


def test_none_means_random_on_purpose():
    assert build_model(TINY, "none").config.encoder_init == "random"


LITE = ModelConfig(encoder="efficientnet-lite0", decoder_channels=(16, 16, 8, 8, 8))


def test_packaged_efficientnet_lite0_weights_load_under_timm_names_with_their_normalisation():
    from qc_worker.detector.pretrained import KNOWN_WEIGHTS

    known = KNOWN_WEIGHTS["efficientnet-lite0"]
    assert known.locate() is not None, "run `make train-weights` (part of the venv)"
    model = build_model(LITE, "imagenet")
    assert model.config.encoder_init == f"imagenet:efficientnet-lite0-57934424.pth:{known.sha256}"
    assert model.config.mean == model.config.std == (0.5, 0.5, 0.5)
    torch.testing.assert_close(model.mean.flatten(), torch.full((3,), 0.5))
    ref = torch.load(known.locate(), map_location="cpu", weights_only=True)
    # First, middle and last block: a shifted pairing could not match all three.
    net = model.encoder.model
    torch.testing.assert_close(net.conv_stem.weight[:, :3], ref["_conv_stem.weight"])
    torch.testing.assert_close(net.blocks[4][0].conv_dw.weight, ref["_blocks.8._depthwise_conv.weight"])
    torch.testing.assert_close(net.blocks[6][0].conv_pwl.weight, ref["_blocks.15._project_conv.weight"])


def _lite_file(tmp_path, edit):
    from qc_worker.detector.pretrained import KNOWN_WEIGHTS

    state = torch.load(KNOWN_WEIGHTS["efficientnet-lite0"].locate(), map_location="cpu", weights_only=True)
    edit(state)
    path = tmp_path / "lite-edited.pth"
    torch.save(state, path)
    return path


def test_an_efficientnet_pytorch_file_of_another_depth_is_refused(tmp_path):
    path = _lite_file(tmp_path, lambda s: [s.pop(k) for k in [k for k in s if k.startswith("_blocks.15.")]])
    with pytest.raises(ValueError, match="efficientnet_pytorch layout"):
        load_encoder_weights(BlurDetector(LITE), path)


def test_an_efficientnet_pytorch_file_with_a_wrong_shape_names_the_tensor(tmp_path):
    path = _lite_file(
        tmp_path,
        lambda s: s.__setitem__("_blocks.3._depthwise_conv.weight", torch.zeros(144, 1, 3, 3)),
    )
    with pytest.raises(ValueError, match=r"model\.blocks\.2\.0\.conv_dw\.weight has shape \(144, 1, 3, 3\)"):
        load_encoder_weights(BlurDetector(LITE), path)
