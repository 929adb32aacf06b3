"""Everything that makes a new detector: blur synthesis, datasets, losses, training, evaluation.

Imports :mod:`qc_worker` (the model definition lives there so the worker never needs this
package); :mod:`qc_worker` never imports this package.
"""
