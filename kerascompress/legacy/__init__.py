"""Legacy Keras 2 (``tf_keras``) models through tensorflow-model-optimization (tfmot).

tfmot works only on tf_keras models and, when imported, sets ``TF_USE_LEGACY_KERAS=1``
for the whole process, which would make every later ``tf.keras`` lookup resolve to
Keras 2. This package imports tfmot lazily, only when a tf_keras model arrives, and
restores the environment variable right after (see `tfmot_session`). A Keras 3 user
never imports it. Install with ``pip install kerascompress[tfmot]`` (tf-keras needs the
full ``tensorflow`` wheel, not ``tensorflow-cpu``).
"""
from kerascompress.legacy.tfmot import (
    LegacyUnavailable,
    cluster_tf_keras,
    missing_reason,
    qat_tf_keras,
    sparsity_tf_keras,
    tfmot_session,
)

__all__ = ["LegacyUnavailable", "cluster_tf_keras", "missing_reason", "qat_tf_keras", "sparsity_tf_keras", "tfmot_session"]
