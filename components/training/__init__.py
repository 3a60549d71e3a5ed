"""Training step: CNN from scratch and backbone transfer learning, one pipeline and fit loop."""
