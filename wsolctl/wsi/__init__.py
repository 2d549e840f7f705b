"""Whole-slide image helpers: reading through large-image (:mod:`.slide`), Otsu tissue masks
(:mod:`.tissue`), ASAP XML annotations and their exact rasterisation (:mod:`.annotations`), and the
patch-sampling protocol of the survey's Appendix B (:mod:`.sampling`) and the CAMELYON16 sampler
built on it (:mod:`.camelyon16`), which runs slides in parallel with :mod:`.parallel` (also used by
``wsolctl predict``).

Nothing here reads a whole level-0 image: tissue detection uses a low-resolution overview and
patches are read one region at a time.
"""
