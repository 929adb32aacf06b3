"""Artwork QC worker: finds subtle motion blur in streaming artwork and says where it is.

Everything that runs in production lives in this package: configuration
(:mod:`qc_worker.config`), the ``qc`` command line (:mod:`qc_worker.cli`), and, as they
arrive, the screening pipeline, the detector, storage, the database layer and the Celery
tasks. The training code lives in :mod:`model_training`, which imports this package and
never the reverse.
"""

__version__ = "0.1.0"
