"""Iterative style transfer (Gatys et al. 2016): the optimiser of an image's pixels (`gatys.py`), VGG-19 run
on tiles with exact gradients for images too large for one pass, the memory plan that picks the tiles, and
the Laplacian pyramid L-BFGS can optimise instead of the pixels.

May import `core`, and `networks` for one thing: Magenta's arbitrary-style network renders the start image
(--init arbitrary).
"""
