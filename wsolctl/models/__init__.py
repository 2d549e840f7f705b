"""The old name of :mod:`wsolctl.backbones` (renamed in issue 29). Only ``wsolctl.models.base`` is
kept, for third-party backbone plugins written against it (docs/plugins.md); new code imports
``wsolctl.backbones.base``."""
