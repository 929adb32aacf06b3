"""Mask sources run offline and return usable, reproducible instances."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from model_training.synth.instances import Instance
from model_training.synth.masks import (
    SOURCE_NAMES,
    FaceBox,
    FaceDetector,
    ForegroundMatte,
    MaskSource,
    MaskSourceError,
    RandomShapes,
    SamSource,
    SkinHair,
    TorchScriptSegmenter,
    build_mask_sources,
    extract_instances,
)

SKIN_RGB = (224, 172, 140)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def assert_valid(instance: Instance, shape: tuple[int, int]) -> None:
    assert instance.mask.shape == shape
    assert instance.mask.dtype == np.uint8
    assert set(np.unique(instance.mask)) <= {0, 255}
    assert instance.area > 0


@pytest.fixture
def disk_image() -> tuple[np.ndarray, np.ndarray]:
    """A bright textured disk, off centre, on a dark noisy background."""
    rng = np.random.default_rng(1)
    height, width = 240, 320
    image = rng.normal(30, 10, (height, width, 3))
    yy, xx = np.mgrid[:height, :width]
    disk = (xx - 200) ** 2 + (yy - 100) ** 2 < 60**2
    image[disk] = rng.normal(180, 30, (height, width, 3))[disk]
    return np.clip(image, 0, 255).astype(np.uint8), disk


def square_mask(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = 255
    return mask


class FixedSource:
    def __init__(self, masks: list[np.ndarray], kind: str = "fixed") -> None:
        self.name = kind
        self.masks = masks

    def __call__(self, image: np.ndarray) -> list[Instance]:
        return [Instance(m.copy(), self.name) for m in self.masks]


def test_foreground_matte_recovers_disk(disk_image):
    image, disk = disk_image
    instances = ForegroundMatte()(image)
    assert instances, "no foreground found"
    assert instances[0].kind == "foreground"
    assert_valid(instances[0], disk.shape)
    assert iou(instances[0].mask, disk) > 0.8


def test_foreground_matte_is_deterministic(disk_image):
    image, _ = disk_image
    first = ForegroundMatte()(image)
    second = ForegroundMatte()(image)
    assert len(first) == len(second)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(first, second))


@pytest.mark.parametrize(
    "image",
    [
        np.full((120, 160, 3), 128, np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((3, 500, 3), np.uint8),
        np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8),
    ],
    ids=["flat", "1px", "sliver", "tiny-noise"],
)
def test_foreground_matte_survives_degenerate_images(image):
    for instance in ForegroundMatte()(image):
        assert_valid(instance, image.shape[:2])


def test_flat_image_has_no_foreground():
    assert ForegroundMatte()(np.full((120, 160, 3), 128, np.uint8)) == []


def test_face_cascades_load_and_blank_image_has_no_faces():
    detector = FaceDetector()
    assert detector(np.full((240, 320, 3), 200, np.uint8)) == []
    assert detector(np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)) == []


def test_face_mask_is_an_ellipse_taller_than_the_box(monkeypatch):
    detector = FaceDetector()
    monkeypatch.setattr(
        detector, "_detect", lambda image: [FaceBox(100, 80, 60, 60, 0.9, profile=False)]
    )
    (face,) = detector(np.zeros((300, 300, 3), np.uint8))
    assert face.kind == "face" and face.score == pytest.approx(0.9)
    assert_valid(face, (300, 300))
    x0, y0, x1, y1 = face.bbox()
    assert y1 - y0 >= 1.2 * 60 and x1 - x0 <= 60
    assert face.mask[110, 130] == 255
    assert face.mask[y0, x0] == 0, "corners of the box are outside the ellipse"


def test_profile_duplicates_of_frontal_faces_are_dropped(monkeypatch):
    def fake_run(self, cascade_file, gray, min_side, profile):
        if not profile:
            return [FaceBox(50, 50, 40, 40, 0.8, profile=False)]
        return [FaceBox(54, 52, 40, 40, 0.9, profile=True), FaceBox(150, 50, 40, 40, 0.7, True)]

    monkeypatch.setattr(FaceDetector, "_run", fake_run)
    faces = FaceDetector(max_side=10_000)._detect(np.zeros((200, 400, 3), np.uint8))
    boxes = sorted((f.x, f.profile) for f in faces)
    # The mirrored profile pass also reports the two profile boxes, flipped.
    assert (50, False) in boxes and (54, True) not in boxes
    assert (150, True) in boxes
    assert len(faces) == len({(f.x, f.y) for f in faces})


def test_skin_found_inside_foreground_only():
    image = np.full((200, 300, 3), 90, np.uint8)
    image[40:100, 40:100] = SKIN_RGB
    image[120:180, 200:260] = SKIN_RGB
    foreground = np.zeros((200, 300), bool)
    foreground[20:120, 20:120] = True
    instances = SkinHair()(image, foreground_mask=foreground)
    skin = [i for i in instances if i.kind == "skin"]
    assert len(skin) == 1
    assert_valid(skin[0], (200, 300))
    assert iou(skin[0].mask, square_mask((200, 300), 40, 100, 40, 100)) > 0.9


def test_hair_is_the_dark_band_above_a_face(monkeypatch):
    image = np.full((300, 300, 3), (120, 160, 200), np.uint8)
    image[90:210, 110:190] = SKIN_RGB
    image[50:100, 100:200] = (40, 30, 25)
    image[170:190, 100:108] = (40, 30, 25)  # dark, in the band, but not touching the face
    faces = FaceDetector()
    monkeypatch.setattr(faces, "_detect", lambda img: [FaceBox(110, 100, 80, 100, 1.0, False)])
    foreground = np.zeros((300, 300), bool)
    foreground[40:260, 80:220] = True
    instances = SkinHair(faces=faces)(image, foreground_mask=foreground)
    (hair,) = [i for i in instances if i.kind == "hair"]
    assert_valid(hair, (300, 300))
    ys, xs = np.nonzero(hair.mask)
    assert ys.max() < 110, "hair stays above the face"
    assert np.all(image[ys, xs] == (40, 30, 25))
    assert hair.area > 0.3 * 50 * 100


def test_random_shapes_deterministic_per_seed():
    image = np.zeros((120, 200, 3), np.uint8)
    shapes = RandomShapes(count=(2, 4))
    first = shapes(image, np.random.default_rng(7))
    again = shapes(image, np.random.default_rng(7))
    other = shapes(image, np.random.default_rng(8))
    assert 2 <= len(first) <= 4
    for instance in first + other:
        assert instance.kind == "random"
        assert_valid(instance, (120, 200))
    assert [i.mask.tobytes() for i in first] == [i.mask.tobytes() for i in again]
    assert [i.mask.tobytes() for i in first] != [i.mask.tobytes() for i in other]


def test_random_shapes_without_rng_follow_image_content():
    shapes = RandomShapes()
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), np.uint8)
    first = shapes(image)
    again = shapes(image.copy())
    assert [i.mask.tobytes() for i in first] == [i.mask.tobytes() for i in again]
    changed = image.copy()
    changed[0, 0] ^= 1
    assert [i.mask.tobytes() for i in shapes(changed)] != [i.mask.tobytes() for i in first]


@pytest.mark.parametrize("shape", ["ellipse", "polygon", "blob"])
def test_every_random_shape_kind_is_non_empty(shape):
    shapes = RandomShapes(count=(3, 3), shapes=[shape])
    for seed in range(5):
        for instance in shapes(np.zeros((64, 48, 3), np.uint8), np.random.default_rng(seed)):
            assert_valid(instance, (64, 48))


def test_random_shapes_on_a_single_pixel():
    (instance,) = RandomShapes(count=(1, 1))(np.zeros((1, 1, 3), np.uint8))
    assert instance.area == 1


def _save_scripted(module, path: Path) -> Path:
    import torch

    torch.jit.script(module).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_foreground_map(tmp_path):
    import torch

    class Square(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.full((1, 1, x.shape[2], x.shape[3]), -4.0)
            logits[:, :, 8:24, 16:40] = 4.0
            return logits

    weights = _save_scripted(Square(), tmp_path / "square.pt")
    (source,) = build_mask_sources(["torchscript"], segmenter_weights=weights)
    assert isinstance(source, TorchScriptSegmenter) and isinstance(source, MaskSource)
    (instance,) = source(np.zeros((48, 64, 3), np.uint8))
    assert instance.kind == "segmenter"
    assert np.array_equal(instance.mask, square_mask((48, 64), 8, 24, 16, 40))
    assert instance.score == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_instances_at_lower_resolution(tmp_path):
    import torch

    class TwoHalves(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[2] // 2, x.shape[3] // 2
            logits = torch.full((1, 3, h, w), -1.0)
            logits[:, 0, :, : w // 2] = 1.0
            logits[:, 1, :, w // 2 :] = 1.0
            return logits

    weights = _save_scripted(TwoHalves(), tmp_path / "halves.pt")
    instances = TorchScriptSegmenter(weights)(np.zeros((40, 80, 3), np.uint8))
    assert len(instances) == 2, "the all-negative channel yields no instance"
    assert iou(instances[0].mask, square_mask((40, 80), 0, 40, 0, 40)) > 0.9
    assert iou(instances[1].mask, square_mask((40, 80), 0, 40, 40, 80)) > 0.9


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_torchscript_segmenter_rejects_missing_or_bad_weights(tmp_path):
    with pytest.raises(MaskSourceError, match="nothing.pt"):
        TorchScriptSegmenter(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(MaskSourceError, match="TorchScript"):
        TorchScriptSegmenter(junk)(np.zeros((8, 8, 3), np.uint8))


def test_sam_source_missing_weights_names_the_path(tmp_path):
    missing = tmp_path / "sam_vit_b.pth"
    with pytest.raises(MaskSourceError, match="sam_vit_b.pth"):
        SamSource(missing)


def test_sam_source_without_package_says_how_to_install(tmp_path, monkeypatch):
    weights = tmp_path / "sam_vit_b.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(MaskSourceError, match="install segment-anything"):
        build_mask_sources(["sam"], sam_weights=weights)


def test_unknown_source_name_lists_valid_names():
    with pytest.raises(MaskSourceError, match="valid names") as error:
        build_mask_sources(["foreground", "sam2"])
    assert all(name in str(error.value) for name in SOURCE_NAMES)


def test_weighted_sources_need_weights():
    with pytest.raises(MaskSourceError, match="segmenter_weights"):
        build_mask_sources(["torchscript"])
    with pytest.raises(MaskSourceError, match="sam_weights"):
        build_mask_sources(["sam"])


def test_build_shares_matte_and_faces():
    foreground, faces, skin_hair, random = build_mask_sources(
        ["foreground", "faces", "skin_hair", "random"]
    )
    assert isinstance(skin_hair, SkinHair)
    assert skin_hair.foreground is foreground and skin_hair.faces is faces
    assert isinstance(random, RandomShapes)


def test_extract_falls_back_to_random_shapes_when_nothing_is_found():
    image = np.full((160, 240, 3), 128, np.uint8)
    sources = build_mask_sources(["foreground", "faces", "skin_hair"])
    instances = extract_instances(image, sources, rng=np.random.default_rng(3))
    assert instances and all(i.kind == "random" for i in instances)
    again = extract_instances(image, sources, rng=np.random.default_rng(3))
    assert [i.mask.tobytes() for i in instances] == [i.mask.tobytes() for i in again]


def test_extract_deduplicates_and_drops_tiny_masks():
    shape = (100, 100)
    square = square_mask(shape, 10, 60, 10, 60)
    almost = square.copy()
    almost[10, 10] = 0
    speck = square_mask(shape, 90, 92, 90, 92)
    other = square_mask(shape, 70, 95, 5, 50)
    sources = [FixedSource([square, speck], "a"), FixedSource([almost, other], "b")]
    instances = extract_instances(np.zeros((*shape, 3), np.uint8), sources)
    assert [i.kind for i in instances] == ["a", "b"]
    assert np.array_equal(instances[0].mask, square)
    assert np.array_equal(instances[1].mask, other)


def test_extract_caps_the_number_of_instances():
    masks = [square_mask((60, 60), 0, 30, 2 * k, 2 * k + 4) for k in range(10)]
    instances = extract_instances(
        np.zeros((60, 60, 3), np.uint8), [FixedSource(masks)], max_instances=4
    )
    assert len(instances) == 4


def test_extract_on_disk_image_is_deterministic(disk_image):
    image, disk = disk_image
    runs = [
        extract_instances(
            image, build_mask_sources(["foreground", "faces", "skin_hair", "random"]),
            rng=np.random.default_rng(5),
        )
        for _ in range(2)
    ]
    assert [(i.kind, i.mask.tobytes()) for i in runs[0]] == [
        (i.kind, i.mask.tobytes()) for i in runs[1]
    ]
    assert runs[0][0].kind == "foreground" and iou(runs[0][0].mask, disk) > 0.8


def test_extract_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        extract_instances(np.zeros((10, 10), np.uint8), [])
