"""The training half of semforge: everything that manufactures data or trains models.

* :mod:`.scenes` — the render factory (Blender particle scenes, truth in ``scene.json``);
* :mod:`.segmentation` — UNet++ training, evaluation, ``semforge adapt``;
* :mod:`.translation` — CycleGAN translation of renders and its content check;
* :mod:`.synth` — small synthetic micrographs (the embedded demo sample and tests).

The runtime half (``analysis``, ``pipeline``, ``inference``, ``classification``, ``jobs``, ``storage``,
``rpc``, ``security``) imports nothing from here except the shape library the classifier's training reads.
Nothing runs at import (Blender's own Python imports ``scenes`` submodules through this package).
"""
