"""The user's own photos: colour, mixed sizes, EXIF, odd modes, huge JPEGs, RGB training."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.dataset import DataError, Manifest, load_manifest
from components.data_prep import photos
from components.data_prep.prep import PrepConfig
from components.data_prep.prep import run as prep
from components.training import data
from components.training.config import TrainConfig
from components.training.train import run as train

RED, BLUE = (220, 30, 30), (30, 30, 220)
CROP = photos.SizePolicy("centre_crop", (8, 8), "auto")


def colour_photo(colour, size, rng) -> Image.Image:
    """A noisy photo of mostly one colour, `size` = (width, height)."""
    width, height = size
    noise = rng.integers(-25, 25, size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8))


def make_photo_tree(root: Path, per_class=(12, 6), classes=(("red", RED), ("blue", BLUE))) -> Path:
    """train/ and test/ of colour JPEGs of mixed sizes and aspect ratios."""
    rng = np.random.default_rng(7)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name, colour in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
                colour_photo(colour, size, rng).save(folder / f"{index}.jpg", quality=90)
    return root


def read_split(uri: str, split: str, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    manifest = load_manifest(uri)
    paths = data.split_paths(uri, manifest, split, tmp_path / "cache")
    pairs = list(data.decoded(paths, manifest, manifest.splits[split].count))
    return np.stack([p[0].numpy() for p in pairs]), np.asarray([int(p[1]) for p in pairs])


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


# --- single images -------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path):
    # Stored 40 wide x 20 high, left half red; orientation 6 means "turn 90 deg clockwise".
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    exif = Image.Exif()
    exif[photos.EXIF_ORIENTATION] = 6
    path = save(Image.fromarray(pixels), tmp_path / "r.jpg", exif=exif, quality=95)
    probe = photos.probe(path, 10**8)
    assert (probe.width, probe.height) == (20, 40)  # upright: portrait
    upright = photos.read_photo(path, 10**8, 3, photos.SizePolicy("native", (40, 20), "auto"))
    assert upright.shape == (40, 20, 3)
    # Turned clockwise, the red left half is now the top half.
    assert upright[:15, :, 0].mean() > 180 and upright[25:, :, 2].mean() > 180


def test_cmyk_palette_alpha_and_sixteen_bit_are_converted(tmp_path: Path):
    red = Image.new("RGB", (10, 10), RED)
    cmyk = save(red.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    palette = save(red.convert("P", palette=Image.Palette.ADAPTIVE), tmp_path / "p.png")
    alpha = Image.new("RGBA", (10, 10), (*RED, 255))
    alpha.paste((0, 0, 0, 0), (0, 0, 10, 5))  # top half fully transparent
    rgba = save(alpha, tmp_path / "rgba.png")
    wide = save(Image.fromarray(np.full((10, 10), 40000, np.uint16)), tmp_path / "w16.png")
    assert Image.open(wide).mode.startswith("I")
    native = photos.SizePolicy("native", (10, 10), "auto")
    for path in (cmyk, palette):
        pixels = photos.read_photo(path, 10**8, 3, native)
        assert np.abs(pixels.astype(int) - RED).max() <= 6, path.name
    pixels = photos.read_photo(rgba, 10**8, 3, native)
    assert (pixels[:5] == photos.BACKGROUND).all()  # transparent: the documented background
    assert (pixels[5:] == RED).all()
    gray = photos.read_photo(wide, 10**8, 1, native)
    assert gray.shape == (10, 10, 1) and (gray == round(40000 / 257)).all()
    assert photos.probe(wide, 10**8).grayscale and not photos.probe(palette, 10**8).grayscale


def test_very_large_jpeg_decodes_in_draft_mode(tmp_path: Path):
    # A 6000x4000 phone-sized photo of low quality (small file), resized to 150x150.
    big = Image.new("RGB", (6000, 4000), BLUE)
    path = save(big, tmp_path / "big.jpg", quality=20)
    with Image.open(path) as image:
        photos._draft(image, (150, 150))
        assert image.size == (750, 500)  # decoded at 1/8 scale: 0.4 Mpixels, not 24
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels = photos.read_photo(
        path, 50_000_000, 3, photos.SizePolicy("centre_crop", (150, 150), "auto")
    )
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert pixels.shape == (150, 150, 3) and np.abs(pixels.astype(int) - BLUE).max() <= 8
    assert grown_mib < 40  # a full decode is 72 MB of RGB


def test_centre_crop_keeps_the_aspect_and_the_middle(tmp_path: Path):
    # 30 wide x 10 high: red band in the middle third, blue on both sides.
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:] = BLUE
    pixels[:, 10:20] = RED
    path = save(Image.fromarray(pixels), tmp_path / "wide.png")
    out = photos.read_photo(path, 10**8, 3, CROP)
    assert out.shape == (8, 8, 3)
    assert (np.abs(out[:, 1:-1].astype(int) - RED).max()) <= 2  # not squashed: only the middle


def test_unreadable_and_float_images_are_refused_by_name(tmp_path: Path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"bad\.jpg: (cannot decode|corrupt)"):
        photos.read_photo(bad, 10**8, 3, CROP)
    with pytest.raises(DataError, match=r"x\.png: float pixels are not supported"):
        photos.to_eight_bit(Image.new("F", (4, 4)), "x.png")


# --- data prep ----------------------------------------------------------------------------


def test_mixed_size_colour_folder_needs_no_flag(tmp_path: Path):
    tree = make_photo_tree(tmp_path / "photos")
    result = prep(
        PrepConfig(store=str(tmp_path / "store"), source=str(tree), dataset_name="photos")
    )
    manifest = result.manifest
    size = photos.DEFAULT_SIZE
    assert manifest.image_shape == (size, size, 3)
    assert manifest.image_encoding == "jpeg"
    assert manifest.preprocessing["resize"] == "centre_crop"
    assert manifest.preprocessing["requested"] == "auto"
    images, labels = read_split(result.uri, "test", tmp_path)
    assert images.shape == (12, size, size, 3)
    reds = images[labels == manifest.class_names.index("red")]
    assert reds[..., 0].mean() > 150 > reds[..., 2].mean()  # colour survives
    # Reading the manifest back gives the same fields; an older manifest reads as raw.
    again = Manifest.from_json(manifest.to_json())
    assert again.preprocessing == manifest.preprocessing and again.warnings == manifest.warnings
    legacy = manifest.to_json().replace('"image_encoding": "jpeg"', '"unused": 0')
    assert Manifest.from_json(legacy).image_encoding == "raw"


def test_uniform_sizes_are_kept_and_explicit_size_is_cropped(tmp_path: Path):
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        for name, colour in (("a", RED), ("b", BLUE)):
            for index in range(3):
                save(
                    colour_photo(colour, (80, 70), rng),
                    tmp_path / "t" / split / name / f"{index}.png",
                )
    native = prep(PrepConfig(store=str(tmp_path / "s1"), source=str(tmp_path / "t")))
    assert native.manifest.image_shape == (70, 80, 3)
    assert native.manifest.preprocessing["resize"] == "native"
    assert native.manifest.image_encoding == "jpeg"  # 5,600 pixels: over raw's limit
    lossless = prep(
        PrepConfig(store=str(tmp_path / "s2"), source=str(tmp_path / "t"), shard_encoding="png")
    )
    assert lossless.manifest.image_encoding == "png"
    sized = prep(
        PrepConfig(store=str(tmp_path / "s3"), source=str(tmp_path / "t"), image_size=(16, 12))
    )
    assert sized.manifest.image_shape == (16, 12, 3)
    assert sized.manifest.preprocessing == {
        **sized.manifest.preprocessing,
        "resize": "centre_crop",
        "requested": "16x12",
    }


def test_tiny_and_imbalanced_classes_are_warned(tmp_path: Path, capsys):
    tree = make_photo_tree(tmp_path / "p", per_class=(3, 2))
    rng = np.random.default_rng(1)
    for index in range(60):
        save(colour_photo(RED, (50, 40), rng), tree / "train" / "red" / f"x{index}.jpg")
    manifest = prep(PrepConfig(store=str(tmp_path / "s"), source=str(tree))).manifest
    text = " | ".join(manifest.warnings)
    assert "fewer than 10 training images: blue" in text
    assert "fewer than 5 test images" in text
    assert "strong class imbalance: red has" in text
    assert "dataset_warning" in capsys.readouterr().out


def test_bad_photo_inside_a_tree_is_named(tmp_path: Path):
    tree = make_photo_tree(tmp_path / "p", per_class=(2, 2))
    (tree / "train" / "blue" / "1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"train/blue/1\.jpg: (cannot decode|corrupt)"):
        prep(PrepConfig(store=str(tmp_path / "s"), source=str(tree)))
    assert not (tmp_path / "s" / "datasets").exists() or not any(
        (tmp_path / "s" / "datasets").rglob("manifest.json")
    )


# --- training -----------------------------------------------------------------------------


@pytest.mark.parametrize("budget_mb", [64, 0])
def test_seed_cnn_learns_colour_within_any_cache_budget(tmp_path: Path, budget_mb: int):
    tree = make_photo_tree(tmp_path / "photos", per_class=(30, 10))
    store = str(tmp_path / "store")
    config = PrepConfig(store=store, source=str(tree), image_size=(32, 32), shard_encoding="jpeg")
    uri = prep(config).uri
    manifest = load_manifest(uri)
    expected = "memory" if budget_mb else "file"
    assert set(data.cache_plan(manifest, budget_mb << 20).values()) == {expected}
    result = train(
        TrainConfig(
            dataset_uri=uri,
            output_dir=str(tmp_path / "out"),
            model="seed_cnn",
            input_size=16,
            epochs=4,
            batch_size=8,
            learning_rate=3e-3,
            cache_dir=str(tmp_path / "cache"),
            cache_ram_mb=budget_mb,
        )
    )
    # Red against blue is only separable by colour: a grayscale-only model would be at chance.
    assert result.test_accuracy >= 0.9
    if not budget_mb:
        assert any((tmp_path / "cache" / "decoded").rglob("train*"))


def test_cache_plan_fills_the_budget_in_split_order(tmp_path: Path):
    tree = make_photo_tree(tmp_path / "photos", per_class=(10, 5))
    config = PrepConfig(
        store=str(tmp_path / "s"), source=str(tree), image_size=(32, 32), shard_encoding="jpeg"
    )
    manifest = prep(config).manifest
    per_image = 32 * 32 * 3
    budget = (manifest.splits["train"].count + manifest.splits["test"].count) * per_image
    plan = data.cache_plan(manifest, budget)  # train, then validation fit; test no longer does
    assert plan == {"train": "memory", "validation": "memory", "test": "file"}
    assert data.cache_plan(manifest, None) == dict.fromkeys(data.SPLITS, "memory")
    raw = Manifest.from_json(manifest.to_json().replace('"jpeg"', '"raw"'))
    assert data.cache_plan(raw, 0) == dict.fromkeys(data.SPLITS, "none")


def test_encoded_shards_are_smaller_than_raw(tmp_path: Path):
    tree = make_photo_tree(tmp_path / "photos", per_class=(6, 2))
    sizes = {}
    for encoding in ("raw", "jpeg"):
        manifest = prep(
            PrepConfig(store=str(tmp_path / encoding), source=str(tree), shard_encoding=encoding)
        ).manifest
        sizes[encoding] = sum(s.bytes for s in manifest.splits["train"].shards)
    assert sizes["jpeg"] * 3 < sizes["raw"]


# --- the report with many classes -----------------------------------------------------------


def test_report_stays_readable_with_120_classes_and_colour_mistakes(tmp_path: Path):
    from components.compare.compare import CompareConfig
    from components.compare.compare import run as compare
    from components.compare.inputs import load_run
    from components.compare.plots import BARS_MAX, worst_classes
    from components.compare.report import confused_pairs
    from tests.fixtures_compare import write_run

    names = [f"species_{index:03d}_with_a_rather_long_latin_name" for index in range(120)]
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(5, 10, 120))
    matrix[7, 8] = 40  # class 7 is mostly taken for class 8: the worst class, the top pair
    runs = {}
    for role, model in (("cnn", "seed_cnn"), ("transfer", "inception_v3")):
        runs[role] = write_run(
            tmp_path / role,
            model=model,
            pretrained=role == "transfer",
            class_names=names,
            misclassified=None,
            extra={"confusion_matrix": matrix.tolist()},
        )
        wrong = rng.integers(0, 120, 12)
        np.savez(
            runs[role] / "misclassified.npz",
            images=rng.integers(0, 256, (12, 20, 20, 3), dtype=np.uint8),
            labels=wrong,
            predictions=(wrong + 1) % 120,
            confidence=rng.uniform(0.3, 1.0, 12).astype(np.float32),
        )
    cnn, transfer = (load_run(runs[r], r) for r in ("cnn", "transfer"))
    assert worst_classes(cnn, transfer, BARS_MAX)[0] == 7
    assert confused_pairs(cnn)[0][:2] == (names[7], names[8])
    result = compare(
        CompareConfig(
            cnn_dir=str(runs["cnn"]),
            transfer_dir=str(runs["transfer"]),
            output_dir=str(tmp_path / "out"),
            store=str(tmp_path / "store"),
        )
    )
    out = tmp_path / "out"
    for name in ("confusion.png", "per_class.png", "misclassified_cnn.png"):
        with Image.open(out / name) as image:
            width, height = image.size
            assert width <= 3000 and height <= 1500, (name, image.size)  # not 120 x 0.55 in
    with Image.open(out / "misclassified_transfer.png") as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
        assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 50  # drawn in colour
    page = Path(result.report_html).read_text()
    assert f"the {BARS_MAX} worst of 120 classes" in page
    assert "Most confused class pairs" in page and names[7] in page


# --- the image_size parameter ---------------------------------------------------------------


def test_image_size_reaches_data_prep_from_the_pipeline_make_and_the_cli(tmp_path: Path):
    import subprocess

    import yaml
    from kfp import compiler

    from components.common.cli import parser_for
    from components.data_prep.config import PrepConfig

    parse_args = parser_for("components.data_prep", "", PrepConfig).parse_args
    from pipelines.pipeline import build_pipeline

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["image_size"]["defaultValue"] == "auto"
    prep_inputs = spec["root"]["dag"]["tasks"]["data-prep"]["inputs"]["parameters"]
    assert prep_inputs["image_size"]["componentInputParameter"] == "image_size"
    assert photos.parse_image_size("auto") == ()
    assert photos.parse_image_size("96x128") == (96, 128) and photos.parse_image_size("64") == (
        64,
        64,
    )
    with pytest.raises(ValueError, match="image_size: expected auto, HxW or N"):
        photos.parse_image_size("big")
    assert parse_args(["--image-size", "auto"]).image_size == ()
    assert parse_args(["--image-size", "96x128"]).image_size == (96, 128)
    dry_run = subprocess.run(
        ["make", "-n", "run", "IMAGE_SIZE=96x128", "SOURCE=photos.tar.gz"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--param 'image_size=96x128'" in dry_run
