"""playrecall: a TFX pipeline that trains and ships a skip-aware deep-recall model for music.

Dependencies are pinned in requirements/lock.txt (runtime) and requirements/test-lock.txt (tests,
development) and installed with
`pip install --no-deps --ignore-requires-python -r requirements/lock.txt` (see the Makefile):
tfx 1.16.0 declares Requires-Python <3.11 but runs on 3.11, so no resolver may see it.
"""

import setuptools

setuptools.setup(
    name='playrecall',
    version='0.1.0',
    description='Feedback-aware deep-recall (DeepMatch) TFX pipeline for music recommendation',
    python_requires='>=3.10,<3.12',
    packages=setuptools.find_packages(
        include=['contract', 'pipeline', 'components', 'components.*', 'transform', 'trainer',
                 'evaluation', 'datagen', 'storage']),
    # The curated schema of the raw examples (contract/schema.py), read by ImportSchemaGen.
    package_data={'contract': ['raw_examples.schema.pbtxt']},
    install_requires=[],
)
