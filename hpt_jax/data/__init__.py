"""The bundled real data, installed with the package.

``deepfashion_sample/``: 314 DeepFashion In-shop images (256×176, PATN's crop) from the official
test split with their OpenPose-18 annotations, ``pairs_train.csv`` (322 pairs) and the
outfit-disjoint ``pairs_eval.csv`` (44 pairs). **Licence: DeepFashion In-shop terms,
non-commercial research use only** (``README.md`` and ``SOURCE.md`` in this folder). All images are
from the test split: never report benchmark numbers on them.
"""

import os

#: Folder of the bundled DeepFashion sample (``img/``, ``annotations.csv``, ``pairs_*.csv``).
DEEPFASHION_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepfashion_sample")
