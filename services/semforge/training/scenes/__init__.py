"""Synthetic training data: particle scenes dropped and rendered in headless Blender.

* :mod:`.shapes`, :mod:`.spec` — the shape library and scene specs (numpy only; also run inside Blender).
* :mod:`._blender_worker` — the Blender side (rigid-body drop, Cycles height/id passes, Freestyle borders).
* :mod:`.geometry` — exact footprints, projected thickness, physics sanity report.
* :mod:`.appearance` — SE-like and transmission-like images, noisy height maps.
* :mod:`.runner` — worker processes, one scene, resumable batches into the object store.
"""

# Lazy: Blender's Python imports the numpy-only submodules without pulling in the rest.
_EXPORTS = {
    "SCENE_FILES": "runner", "BlenderWorker": "runner", "RenderError": "runner", "RenderUnavailable": "runner",
    "blender_python": "runner", "render_batch": "runner", "render_scene": "runner", "scene_seed": "runner",
    "SHAPES": "shapes", "make_shape": "shapes",
    "SceneSpec": "spec", "ShapeComponent": "spec", "sample_particles": "spec", "spec_from_dict": "spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
