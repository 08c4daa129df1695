"""lungheart-cl: contrastive pretraining on lung and heart sounds, and label-efficient evaluation."""

import logging

# As Lightning does for its own logger: INFO messages (which cache a run uses, notes, dropped files)
# reach the console unless the application has configured logging itself.
_logger = logging.getLogger(__name__)
_logger.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    _logger.addHandler(logging.StreamHandler())
    _logger.propagate = False
