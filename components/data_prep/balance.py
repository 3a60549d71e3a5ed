"""Class-balance warnings: classes too small to learn or to measure, and strong imbalance."""

from __future__ import annotations

from components.common.dataset import Split

MIN_TRAIN_IMAGES = 10  # a class with fewer training images is hardly learnable
MIN_TEST_IMAGES = 5  # a class with fewer test images has a per-class accuracy of little meaning
MAX_IMBALANCE = 10.0  # largest / smallest training class above this: accuracy hides the small ones
SHOWN = 10  # class names listed per warning


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def class_warnings(splits: dict[str, Split]) -> list[str]:
    """Readable warnings about the per-class counts of the train and test splits."""
    found = []
    train, test = splits["train"].per_class, splits["test"].per_class
    tiny = [name for name, count in train.items() if count < MIN_TRAIN_IMAGES]
    if tiny:
        found.append(
            f"{len(tiny)} classes have fewer than {MIN_TRAIN_IMAGES} training images: "
            f"{_names(tiny)}"
        )
    few = [name for name, count in test.items() if count < MIN_TEST_IMAGES]
    if few:
        found.append(
            f"{len(few)} classes have fewer than {MIN_TEST_IMAGES} test images, so their "
            f"per-class accuracy is noisy: {_names(few)}"
        )
    counts = [count for count in train.values() if count > 0]
    if counts and max(counts) > MAX_IMBALANCE * min(counts):
        largest = max(train, key=train.get)
        smallest = min((name for name in train if train[name] > 0), key=train.get)
        found.append(
            f"strong class imbalance: {largest} has {train[largest]} training images, "
            f"{smallest} has {train[smallest]} ({train[largest] / train[smallest]:.0f}x); "
            "overall accuracy hides the small classes, read the per-class figures"
        )
    return found
