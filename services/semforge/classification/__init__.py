"""Shape classification that learns from renders (Bals & Epple 2023, classification half).

* :mod:`.crops` — particle crops (bounding box + context margin, aspect kept, zero-padded, 2 channels);
* :mod:`.classes` — class sets (SE / transmission), render shapes -> classes, the covered threshold;
* :mod:`.data` — crops and classes from rendered scenes (ideal masks and the segmenter's particles);
* :mod:`.model`, :mod:`.train` — the small CNN, seeded resumable training, ONNX + Triton export;
* :mod:`.runtime` — :class:`Classifier` back ends (``cnn`` in process, ``cnn-triton``, ``rules-v1``).

Importing this package pulls in neither torch nor onnxruntime.
"""

from .classes import CLASSES, COVERED_BELOW, SHAPE_TO_CLASS, UNMEASURED, class_set, modality_set
from .crops import CROP_MARGIN, CROP_SIZE, extract_crops
from .runtime import (DEFAULT_CLASSIFIER, SHIPPED_CLASSIFIERS, Classifier, CnnClassifier, RulesClassifier,
                      apply_classes, classifier_names, create_classifier, register_classifier)

__all__ = ["CLASSES", "COVERED_BELOW", "CROP_MARGIN", "CROP_SIZE", "DEFAULT_CLASSIFIER", "SHAPE_TO_CLASS",
           "SHIPPED_CLASSIFIERS", "UNMEASURED", "Classifier", "CnnClassifier", "RulesClassifier", "apply_classes",
           "class_set", "classifier_names", "create_classifier", "extract_crops", "modality_set",
           "register_classifier"]
