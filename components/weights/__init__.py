"""Download, verify and cache pretrained backbone weights."""
