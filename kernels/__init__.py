"""XNOR-popcount inference kernels (installed as ``zoo_kernels``)."""
