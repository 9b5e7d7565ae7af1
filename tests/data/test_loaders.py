import numpy as np
import pytest
from PIL import Image

from tfcompress import data
from tfcompress.data import Dataset, as_arrays, load


def test_mnist_is_real_and_split(mnist):
    assert mnist.input_shape == (28, 28, 1)
    assert mnist.num_classes == 10
    assert (len(mnist.x_train), len(mnist.x_test)) == (4000, 1000)
    assert mnist.x_train.dtype == np.float32
    assert 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0
    # Stratified: every digit has 100 test images.
    assert np.bincount(mnist.y_test).tolist() == [100] * 10
    # Real digits are mostly background: about 80 % of the pixels are exactly zero.
    assert 0.7 < np.mean(mnist.x_train == 0) < 0.9


def test_hold_out_is_stratified_disjoint_and_keeps_the_test_part(mnist):
    rest, (x_val, y_val) = mnist.hold_out(0.1, seed=1)
    assert (len(rest.x_train), len(x_val)) == (3600, 400)
    assert np.bincount(y_val).tolist() == np.round(np.bincount(mnist.y_train) / 10).tolist()
    flat = {row.tobytes() for row in rest.x_train}
    assert not any(row.tobytes() in flat for row in x_val if row.any())
    assert rest.x_test is mnist.x_test and rest.name == mnist.name
    again = mnist.hold_out(0.1, seed=1)[1][0]
    np.testing.assert_array_equal(again, x_val)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        mnist.hold_out(1.0)


def test_shapes_is_seeded_balanced_and_in_range():
    a = data.load("shapes", num_samples=120, seed=3)
    b = data.load("shapes", num_samples=120, seed=3)
    c = data.load("shapes", num_samples=120, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.input_shape == (32, 32, 3)
    assert a.class_names == data.SHAPE_CLASSES
    labels = np.concatenate([a.y_train, a.y_test])
    assert np.bincount(labels).tolist() == [20] * len(data.SHAPE_CLASSES)
    assert a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0


def test_shapes_image_size():
    ds = data.load("shapes", num_samples=12, image_size=48)
    assert ds.input_shape == (48, 48, 3)


def test_npz_with_x_y_is_split_and_scaled(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = data.load(tmp_path / "d.npz")
    assert ds.input_shape == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_test) == 50
    assert ds.x_train.max() <= 1.0 and ds.x_train.dtype == np.float32


def test_npz_with_own_split_and_one_hot_labels(tmp_path):
    x = np.zeros((6, 4, 4, 3), np.float32)
    y = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3],
             class_names=np.array(["a", "b", "c"]))
    ds = data.load(tmp_path / "d.npz")
    assert ds.y_train.tolist() == [0, 1, 2, 0, 1, 2]
    assert ds.class_names == ("a", "b", "c")


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            pixels = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    ds = data.load(tmp_path)
    assert ds.class_names == ("cat", "dog")
    assert ds.input_shape == (12, 10, 3)
    assert len(ds.x_train) + len(ds.x_test) == 10


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "missing.npz", "neither a built-in name"),
        (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "expected an .npz"),
        (lambda p: np.savez(p / "w.npz", a=np.zeros(3)) or p / "w.npz", "expected 'x' and 'y'"),
        (lambda p: np.savez(p / "s.npz", x=np.zeros((4, 3)), y=np.zeros(4)) or p / "s.npz",
         r"shape \(N, H, W\)"),
        (lambda p: np.savez(p / "n.npz", x=np.zeros((4, 3, 3)), y=np.zeros(5)) or p / "n.npz",
         "4 images but y has 5 labels"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no class sub-folders"),
    ],
    ids=["missing", "wrong-suffix", "wrong-keys", "wrong-shape", "length-mismatch", "no-classes"],
)
def test_bad_sources_say_what_to_do(tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        data.load(make(tmp_path))


def test_load_rejects_wrong_type():
    with pytest.raises(TypeError, match="built-in name"):
        data.load(42)


def test_as_arrays_accepts_every_form(mnist):
    x, y = data.as_arrays(mnist)
    assert len(x) == len(y) == 1000
    x2, y2 = data.as_arrays((mnist.x_test[:5], mnist.y_test[:5]))
    assert y2.tolist() == mnist.y_test[:5].tolist()
    x3, y3 = data.as_arrays(mnist.x_test[:5])
    assert y3 is None and x3.shape == (5, 28, 28, 1)
    with pytest.raises(TypeError, match="Dataset"):
        data.as_arrays(3.0)


def test_dataset_validates_shapes():
    with pytest.raises(ValueError, match="one integer label per image"):
        data.Dataset(np.zeros((3, 2, 2, 1)), np.zeros(2, np.int32), np.zeros((1, 2, 2, 1)),
                     np.zeros(1, np.int32))


# -- issue 12: data that would lose or mix things ---------------------------------------------


def _png(path, size, mode="L", value=128):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_non_finite_images_are_refused_with_a_count(tmp_path):
    x = np.zeros((10, 4, 4, 1), "float32")
    x[2, 0, 0, 0] = np.nan
    x[5, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="x_train holds 2 non-finite values .* in 2 images"):
        Dataset(x, np.zeros(10, "int32"), x[:2] * 0, np.zeros(2, "int32"))
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(ValueError, match="non-finite"):
        load(tmp_path / "nan.npz")
    with pytest.raises(ValueError, match="non-finite"):
        as_arrays((x, np.zeros(10)))


def test_a_truncated_npz_is_one_clear_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((50, 8, 8), "uint8"), y=np.arange(50) % 2)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated or not an .npz"):
        load(path)


def test_a_corrupt_image_is_named(tmp_path):
    _png(tmp_path / "a" / "1.png", (8, 8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load(tmp_path)


def test_every_image_is_resized_and_huge_ones_are_refused(tmp_path, monkeypatch):
    from tfcompress.data import _parts

    for name, size in (("a/0.png", (8, 8)), ("a/1.png", (8, 8)), ("b/2.png", (640, 480)),
                       ("b/3.png", (30, 20))):
        _png(tmp_path / name, size)
    ds = load(tmp_path, image_size=8, channels=1, test_fraction=0.5)
    assert ds.input_shape == (8, 8, 1) and len(ds.x_train) + len(ds.x_test) == 4
    monkeypatch.setattr(_parts, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"2\.png is 640 x 480 pixels"):
        load(tmp_path, image_size=8)


def test_a_link_to_the_folder_itself_is_no_class_and_channels_follow_the_model(tmp_path):
    for c in ("cat", "dog"):
        for i in range(3):
            _png(tmp_path / c / f"{i}.png", (6, 6), "L", 40 * i)
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    grey = load(tmp_path, test_fraction=0.34)
    assert grey.class_names == ("cat", "dog") and grey.input_shape == (6, 6, 1)
    rgb = load(tmp_path, channels=3, test_fraction=0.34)
    assert rgb.input_shape == (6, 6, 3)
    np.testing.assert_allclose(rgb.x_train[..., 0], rgb.x_train[..., 2])
