"""dp_medtf: differentially private training for medical imaging, in TF/Keras."""

import setuptools

setuptools.setup(
    name='dp_medtf',
    version='0.1.0',
    description=('Differentially private training of medical imaging models '
                 'and their reconstruction-risk profiles, in TensorFlow.'),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11,<3.12',
    packages=setuptools.find_packages(include=['dp_medtf', 'dp_medtf.*']),
    install_requires=[
        'tensorflow==2.15.1',
        'tensorflow-privacy==0.9.0',
        'tensorflow-probability==0.22.1',
        'dp-accounting==0.4.3',
        'tensorflow-datasets==4.9.10',
        # Prepared datasets (dp_medtf.data.prepare): ArrayRecord shards.
        'array-record==0.8.6',
        # Newer tensorflow-metadata needs protobuf 5 and breaks TFDS.
        'tensorflow-metadata==1.17.3',
        'protobuf==4.25.9',
        'numpy==1.26.4',
        'scipy>=1.11',
        'scikit-image==0.26.0',
        'scikit-learn>=1.3',
        'absl-py==1.4.0',
        'ml-collections>=0.1.1',
        'matplotlib>=3.7',
        'nibabel>=5.0',
        'pillow>=10.0',
    ],
    extras_require={
        'test': ['pytest>=7.4', 'pydicom==3.0.2', 'mpmath>=1.3'],
    },
)
