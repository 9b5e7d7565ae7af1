"""Loading a user's model: `.keras` and `.h5` files in Keras' safe mode, Keras 2 files and
SavedModels carried over to Keras 3. Sits above the file primitives (`_io`) and below the
techniques, which call it for paths; tfcompress's own layer classes are registered with Keras
as soon as Keras is imported (`tfcompress/__init__.py`), so no technique is imported here."""

import os
import zipfile

from tfcompress._io import KERAS_SUFFIXES, is_saved_model_dir


def load_keras_model(path: "str | os.PathLike", safe_mode: bool = True, compile: bool = True):
    """Loads a `.keras` or `.h5` file, or a Keras 2 SavedModel directory, with a clear error
    for every way it can fail. Keras 2 files (`tf_keras`) are carried over to Keras 3 and
    verified layer by layer (see `tfcompress._legacy`).

    Args:
        path: The model file.
        safe_mode: Keep Keras' safe mode, which refuses to run a Lambda layer's code from the
            file. Defaults to `True`.
        compile: Restore the saved compile settings (optimizer, loss, metrics). Defaults to
            `True`.

    Returns:
        The `keras.Model`.

    Raises:
        ValueError: If the file is missing, not a Keras model, corrupt, or needs
            `safe_mode=False`.
    """
    import keras  # importing keras registers tfcompress's own layers (tfcompress/__init__.py)

    from tfcompress import _legacy

    text = os.fspath(path)
    if not os.path.exists(text):
        raise ValueError(f"No model at {text}. Check the path.")
    if _legacy.is_tf_keras_saved_model(text) or (
            is_saved_model_dir(text) and _legacy.tf_keras_available()):
        try:  # SavedModels from before TF 2.5 keep their Keras metadata inside saved_model.pb
            return _legacy.load(text, safe_mode=safe_mode)
        except _legacy.LegacyReadError as e:
            if _legacy.is_tf_keras_saved_model(text):
                raise
            raise ValueError(
                f"{text} is a SavedModel that is not a Keras model ({e}). It can be exported "
                "to TFLite but not fine-tuned; save the Keras model with model.save().") from e
    if os.path.isdir(text):
        raise ValueError(
            f"{text} is a directory; expected a .keras or .h5 file, or a SavedModel saved by "
            "Keras 2 (it holds keras_metadata.pb). Other SavedModel directories can be exported "
            "to TFLite but not fine-tuned; save the Keras model with model.save()."
        )
    if not text.lower().endswith(KERAS_SUFFIXES):
        raise ValueError(
            f"{text} is not a Keras model file; expected a name ending in "
            f"{', '.join(KERAS_SUFFIXES)} (save one with model.save('model.keras'))."
        )
    if text.lower().endswith(".keras") and not zipfile.is_zipfile(text):
        raise ValueError(
            f"Could not load {text} as a Keras model: the file is corrupt or not a Keras model "
            "(a .keras file is a zip archive, this one is not). Re-save it with model.save()."
        )
    if text.lower().endswith((".h5", ".hdf5")) and _legacy.is_keras2_h5(text):
        return _legacy.load(text, safe_mode=safe_mode)
    try:
        return keras.saving.load_model(text, safe_mode=safe_mode, compile=compile)
    except ValueError as e:
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise ValueError(
                f"{text} contains a Lambda layer whose Python code would run when it loads. "
                "Keras' safe mode refuses that. If you trust the file, pass safe_mode=False "
                "(on the command line: --unsafe)."
            ) from e
        raise ValueError(f"Could not load {text} as a Keras model ({e}).") from e
    except (OSError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise ValueError(
            f"Could not load {text} as a Keras model: the file is corrupt or not a Keras "
            f"model ({type(e).__name__}: {e})."
        ) from e
