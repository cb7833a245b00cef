"""TensorFlow set-up inside a worker: thread pools sized to the trial's cores, GPU memory growth."""

from __future__ import annotations

import os

_configured = False


def configure_tensorflow(cpus: int) -> None:
    """Size TensorFlow's thread pools and turn on GPU memory growth, once per process.

    Args:
        cpus: cores the trial may use; ``SLURM_CPUS_PER_TASK`` wins when set, because inside an
            array task it is what the scheduler actually granted.
    """
    global _configured
    if _configured:
        return
    # 3 hides TF 2.15's harmless "Unable to register cuDNN/cuFFT/cuBLAS factory" lines at import;
    # real failures still raise Python exceptions. Set TF_CPP_MIN_LOG_LEVEL yourself to see more.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    # Keras' "tf.function retracing" and IndexedSlices warnings fill worker logs and mean nothing here.
    tf.get_logger().setLevel("ERROR")
    n = int(os.environ.get("SLURM_CPUS_PER_TASK", cpus) or cpus)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, n)))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        # TensorFlow was already initialised in this process (e.g. inline executor after an
        # earlier TF trial); its pools keep the sizes they were created with.
        pass
    _configured = True


def device_name() -> str:
    """``GPU:0 (<name>)`` when TensorFlow sees a GPU, else ``cpu``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU:0 ({details.get('device_name', 'unknown')})"
