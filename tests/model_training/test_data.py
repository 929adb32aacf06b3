"""Sources, splits, sampling modes, labels, determinism and bad input."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_training.data import (
    BlurSynthDataset,
    SourceError,
    list_sources,
    load_source,
    split_sources,
    synthesize,
)
from model_training.synth.config import (
    CameraConfig,
    CoverageConfig,
    GraphicsConfig,
    LookConfig,
    NegativeConfig,
    SamplingConfig,
    SynthConfig,
)
from model_training.synth.degrade import DEGRADATIONS
from model_training.synth.instances import Instance
from tests.model_training.photos import make_photo

FAST = ("random",)


def _ds(photo_dir, **kw):
    return BlurSynthDataset(
        list_sources(photo_dir),
        kw.pop("cfg", SynthConfig(sampling=SamplingConfig(out_size=128))),
        mask_sources=FAST,
        **kw,
    )


def test_mask_and_intensity_are_consistent(photo_dir):
    ds = _ds(photo_dir, length=24, seed=3)
    blurred = 0
    for i in range(len(ds)):
        s = ds.sample(i)
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 255}
        assert (s.intensity[s.mask == 0] == 0).all(), "intensity outside the mask"
        assert s.intensity.min() >= 0 and s.intensity.max() <= 1
        if s.mask.any():
            blurred += 1
            assert (s.intensity[s.mask > 0] > 0).all()
    assert blurred >= 8


def test_hard_negatives_have_an_empty_mask_and_a_changed_image():
    img = make_photo(0)
    h, w = img.shape[:2]
    m = np.zeros((h, w), np.uint8)
    m[50:150, 80:180] = 255
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=1.0),
        sampling=SamplingConfig(out_size=128, post_downscale_prob=0.0),
    )
    kinds = set()
    for seed in range(12):
        s = synthesize(img, [Instance(m, "foreground")], np.random.default_rng(seed), cfg)
        assert s.params["mode"] == "negative"
        assert not s.mask.any() and not s.intensity.any()
        kinds |= {d["type"] for d in s.params["degradations"]}
    assert kinds <= set(DEGRADATIONS) and len(kinds) >= 5


@pytest.mark.parametrize("p,mode", [(1.0, "mask_centric"), (0.0, "image_centric")])
def test_the_hybrid_parameter_chooses_the_sampling_mode(photo_dir, p, mode):
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=0.0),
        sampling=SamplingConfig(out_size=128, mask_centric_prob=p),
        camera=CameraConfig(prob=0.0),
        graphics=GraphicsConfig(prob=0.0),
    )
    ds = _ds(photo_dir, cfg=cfg, length=6)
    assert {ds.sample(i).params["mode"] for i in range(6)} == {mode}


def test_mask_centric_samples_always_blur_their_instance(photo_dir):
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=0.0, on_positive_prob=0.0),
        sampling=SamplingConfig(out_size=128, mask_centric_prob=1.0),
    )
    ds = _ds(photo_dir, cfg=cfg, length=10)
    assert sum(ds.sample(i).mask.any() for i in range(10)) >= 8


def test_post_downscale_scales_the_intensity_target():
    img = make_photo(5, size=(400, 400))
    m = np.zeros((400, 400), np.uint8)
    m[100:300, 100:300] = 255
    base = dict(
        negatives=NegativeConfig(prob=0.0, on_positive_prob=0.0),
        blur_types=("straight",),
        camera=CameraConfig(prob=0.0),
    )
    big = SynthConfig(
        **base,
        sampling=SamplingConfig(
            out_size=96,
            mask_centric_prob=0.0,
            no_blur_prob=0.0,
            post_downscale_prob=0.0,
            short_side=(400, 400),
            max_upscale=1.0,
        ),
    )
    small = SynthConfig(
        **base,
        sampling=SamplingConfig(
            out_size=96,
            mask_centric_prob=0.0,
            no_blur_prob=0.0,
            post_downscale_prob=1.0,
            post_downscale=(0.5, 0.5),
            short_side=(400, 400),
            max_upscale=1.0,
        ),
    )
    inst = [Instance(m, "foreground")]
    for seed in range(20):
        a = synthesize(img, inst, np.random.default_rng(seed), big)
        if a.params["instances"][0]["coverage"] != "sharp" and a.mask.any():
            b = synthesize(img, inst, np.random.default_rng(seed), small)
            assert b.intensity.max() == pytest.approx(a.intensity.max() / 2, rel=0.05)
            return
    pytest.fail("no blurred sample drawn")


def test_split_is_by_source_and_seeded(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(50)]
    train, val = split_sources(paths, 0.2, seed=1)
    assert len(val) == 10 and not set(train) & set(val) and set(train) | set(val) == set(paths)
    assert split_sources(list(reversed(paths)), 0.2, seed=1) == (train, val)
    assert split_sources(paths, 0.2, seed=2)[1] != val


def test_same_seed_and_index_give_the_same_sample_in_two_processes(photo_dir):
    code = (
        "import sys, hashlib; from pathlib import Path;"
        "from model_training.data import BlurSynthDataset, list_sources;"
        "ds = BlurSynthDataset(list_sources(Path(sys.argv[1])), seed=11, length=6);"
        "h = hashlib.sha256();"
        "[h.update(ds.sample(i).image.tobytes() + ds.sample(i).mask.tobytes()"
        " + ds.sample(i).intensity.tobytes()) for i in (0, 3, 5)];"
        "print(h.hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    run = lambda: subprocess.run(
        [sys.executable, "-c", code, str(photo_dir)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    ).stdout.strip()
    first, second = run(), run()
    assert first == second and len(first) == 64
    other = BlurSynthDataset(list_sources(photo_dir), seed=12, length=6).sample(0)
    same = BlurSynthDataset(list_sources(photo_dir), seed=11, length=6).sample(0)
    assert not np.array_equal(other.image, same.image)


def test_dataloader_workers_reproduce_the_single_process_samples(photo_dir):
    ds = _ds(photo_dir, length=4, seed=5)
    single = [ds[i] for i in range(4)]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    batches = list(loader)
    multi = torch.cat([b["image"] for b in batches])
    torch.testing.assert_close(multi, torch.stack([s["image"] for s in single]))
    assert batches[0]["mask"].shape == (2, 1, 128, 128)


def test_bad_sources_are_skipped_with_a_logged_reason(photo_dir, caplog):
    (photo_dir / "empty.jpg").write_bytes(b"")
    (photo_dir / "notes.png").write_text("this is not an image")
    (photo_dir / "README.txt").write_text("ignored: not an image suffix")
    with caplog.at_level(logging.WARNING):
        found = list_sources(photo_dir)
    names = {p.name for p in found}
    assert "empty.jpg" not in names and "notes.png" not in names and len(found) == 4
    assert "empty (0 bytes)" in caplog.text and "notes.png" in caplog.text


def test_a_source_that_breaks_after_listing_is_replaced_not_fatal(photo_dir, caplog):
    sources = list_sources(photo_dir)
    data = sources[0].read_bytes()
    sources[0].write_bytes(data[: len(data) // 3])
    ds = _ds(photo_dir, length=8)
    ds.sources = sources
    with caplog.at_level(logging.WARNING):
        got = [ds.sample(i).params["source"] for i in range(8)]
    assert sources[0].name not in got
    assert "cannot decode" in caplog.text and sources[0].name in caplog.text
    with pytest.raises(SourceError):
        load_source(sources[0])


def test_a_blurred_instance_with_a_flat_interior_is_labelled_on_its_texture_only():
    # A flat grey card with a textured border, blurred as a whole instance.
    h, w = 200, 200
    img = np.full((h, w, 3), 90, np.uint8)
    rng = np.random.default_rng(5)
    img[:] = (rng.random((h, w, 1)) * 255).astype(np.uint8)  # textured background
    img[40:160, 40:160] = 200  # flat card interior
    m = np.zeros((h, w), np.uint8)
    m[30:170, 30:170] = 255
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=0.0, on_positive_prob=0.0),
        sampling=SamplingConfig(
            out_size=192,
            mask_centric_prob=0.0,
            no_blur_prob=0.0,
            post_downscale_prob=0.0,
            short_side=(200, 200),
            grayscale_prob=0.0,
        ),
        coverage=CoverageConfig(sharp=0.0, full=1.0, partial=0.0),
        camera=CameraConfig(prob=0.0),
        graphics=GraphicsConfig(prob=0.0, overlay_prob=0.0),
    )
    for seed in range(4):
        s = synthesize(img, [Instance(m, "foreground")], np.random.default_rng(seed), cfg)
        if not s.mask.any():
            continue
        obs = s.observable > 0
        blurred = s.mask > 0
        assert not (blurred & ~obs).any(), "a pixel without texture was labelled blurred"
        # The card's flat middle is neither blurred nor sharp: it is out of the losses.
        x0, y0 = s.params["out_crop"][:2]
        centre = obs[80 - y0 : 120 - y0, 80 - x0 : 120 - x0]
        assert centre.size and not centre.any()
        assert blurred.sum() > 0
        return
    raise AssertionError("no seed gave a visible blur")


def test_observability_is_read_after_the_scene_look():
    # A faint texture under a thick veil has no gradient left to judge: it is never labelled.
    rng = np.random.default_rng(2)
    img = (128 + rng.normal(0, 12, (160, 160, 1)).repeat(3, axis=2)).clip(0, 255).astype(np.uint8)
    look = LookConfig(prob=1.0, haze=(0.97, 0.97), airlight=(0.5, 0.5), exposure=(1.0, 1.0), cast=0.0)
    cfg = SynthConfig(
        negatives=NegativeConfig(prob=0.0, on_positive_prob=0.0),
        sampling=SamplingConfig(out_size=128, mask_centric_prob=0.0, no_blur_prob=0.0, short_side=(160, 160)),
        camera=CameraConfig(prob=1.0),
        graphics=GraphicsConfig(prob=0.0, overlay_prob=0.0),
        look=look,
    )
    plain = cfg.model_copy(update={"look": LookConfig(prob=0.0)})
    veiled = synthesize(img, [], np.random.default_rng(0), cfg)
    clear = synthesize(img, [], np.random.default_rng(0), plain)
    assert veiled.params["look"]["haze"] == pytest.approx(0.97)
    assert "look" not in clear.params
    assert clear.mask.any() and clear.observable.any()
    assert not veiled.observable.any() and not veiled.mask.any()


def test_the_recipe_before_looks_and_sweeps_makes_the_samples_it_made_then():
    # The model card's fixed test sets are rebuilt with docs/model/synth_config-before-gen10.json:
    # a zero look probability must draw nothing, and a sweep weight left out must not shift
    # which other camera kind is drawn.
    img = make_photo(3, size=(240, 240))
    m = np.zeros((240, 240), np.uint8)
    m[60:180, 60:180] = 255
    before = SynthConfig.load(Path(__file__).parents[2] / "docs/model/synth_config-before-gen10.json")
    assert before.look.prob == 0.0 and "sweep" not in before.camera.kind_weights
    weights = {**before.camera.kind_weights, "sweep": 0.0}
    explicit = before.model_copy(update={"camera": before.camera.model_copy(update={"kind_weights": weights})})
    for seed in range(12):
        a = synthesize(img, [Instance(m, "foreground")], np.random.default_rng(seed), before)
        b = synthesize(img, [Instance(m, "foreground")], np.random.default_rng(seed), explicit)
        np.testing.assert_array_equal(a.image, b.image)
        assert "look" not in a.params
        assert a.params.get("camera", {}).get("kind") != "sweep"
