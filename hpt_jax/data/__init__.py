"""The bundled real data, installed with the package.

``deepfashion_sample/``: 314 DeepFashion In-shop images (256×176, PATN's crop) from the official
test split with their OpenPose-18 annotations, ``pairs_train.csv`` (322 pairs) and the
outfit-disjoint ``pairs_eval.csv`` (44 pairs). **Licence: DeepFashion In-shop terms,
non-commercial research use only** (``README.md`` and ``SOURCE.md`` in this folder). All images are
from the test split: never report benchmark numbers on them.

``market1501_sample/``: 207 Market-1501 test-split crops (128×64) with annotations, 108
same-identity pairs and an identity-disjoint split (``pairs_train.csv`` 85 pairs,
``pairs_eval.csv`` 23 pairs). **Licence: Market-1501 terms, non-commercial research use only**
(``market1501_sample/README.md``).
"""

import os

#: Folder of the bundled DeepFashion sample (``img/``, ``annotations.csv``, ``pairs_*.csv``).
DEEPFASHION_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deepfashion_sample")
#: Folder of the bundled Market-1501 sample (``img/``, ``annotation.csv``, ``pairs_*.csv``), 128×64.
MARKET1501_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "market1501_sample")
