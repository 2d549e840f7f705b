"""Procedural synthetic H&E histology: GlaS-like colon glands and Camelyon-like lymph node.

Three layers: :mod:`.primitives` (textures, nuclei, shapes, stains), :mod:`.glas` and :mod:`.camelyon`.

Rendering model
---------------
Tissue is described by *stain density* maps -- haematoxylin (H, nuclei, mucin) and eosin
(E, cytoplasm, collagen) -- which are converted to RGB with the inverse colour deconvolution
of :func:`skimage.color.hed2rgb` (``combine_stains`` with the Ruifrok-Johnston H/E/DAB
vectors, optionally jittered per image). The DAB slot is zero everywhere except inside red
blood cells, where a little of its brown absorption turns eosin's magenta into RBC red.

All geometry is designed on a 256-px reference field of view and scaled by ``size / 256``,
so every ``size`` shows the same kind of field at a different resolution. Masks are
rasterised from the same analytic shapes that are drawn (no antialiasing in the mask).

Only numpy and scikit-image are used; a single ``np.random.default_rng(seed)`` drives every
random choice, so identical arguments give byte-identical outputs.
"""
from wsolctl.data.histology.camelyon import render_camelyon
from wsolctl.data.histology.glas import render_glas

__all__ = ["render_camelyon", "render_glas"]
