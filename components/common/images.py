"""The images the KFP components name when none is given: placeholders, refused by `compile`.

`make compile` / `python -m pipelines compile --cpu-image --gpu-image` bake the real images in.
"""

DEFAULT_CPU_IMAGE = "us-docker.pkg.dev/my-project/transfer-learning/tl-cpu:latest"
DEFAULT_GPU_IMAGE = "us-docker.pkg.dev/my-project/transfer-learning/tl-gpu:latest"
