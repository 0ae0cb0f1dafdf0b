"""TensorFlow Datasets builders for HAM10000, RadImageNet and MSD Liver.

The datasets cannot be downloaded automatically: users place them in TFDS's
manual folder (or pass `manual_dir`), and each builder indexes them with the
same reader as `--dataset=X --data_dir=...`, so splits, labels and checks
are identical. HAM10000 and RadImageNet keep their original images (RadImageNet
as grayscale); MSD Liver stores the reader's preprocessed volumes.

Example:

  A miniature HAM10000 (20 lesions of one grey image each; see
  dp_medtf.data.ham10000 for the layout) in the manual folder:

  >>> os.makedirs('manual/HAM10000_images_part_1')
  >>> rows = [f'HAM_{i},ISIC_{i},{"mel" if i % 4 else "nv"}' for i in range(20)]
  >>> with open('manual/HAM10000_metadata.csv', 'w') as f:
  ...   _ = f.write('\\n'.join(['lesion_id,image_id,dx'] + rows))
  >>> grey = tf.fill([45, 60, 3], tf.constant(128, tf.uint8))
  >>> for i in range(20):
  ...   tf.io.write_file(f'manual/HAM10000_images_part_1/ISIC_{i}.jpg',
  ...                    tf.io.encode_jpeg(grey))
  >>> builder = Ham10000(data_dir='tfds')
  >>> builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
  ...     manual_dir='manual'))
  Downloading and preparing dataset ... to tfds/ham10000/default/1.0.0...
  Dataset ham10000 downloaded and prepared to tfds/ham10000/default/1.0.0. ...
  >>> ds = builder.as_dataset(split='train', as_supervised=True)
  >>> len(ds), ds.element_spec[0].shape
  (16, TensorShape([None, None, 3]))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from dp_medtf import recipes
from dp_medtf.data import files
from dp_medtf.data import ham10000
from dp_medtf.data import msd_liver
from dp_medtf.data import radimagenet

_SPLITS = {'train': tfds.Split.TRAIN, 'validation': tfds.Split.VALIDATION,
           'test': tfds.Split.TEST}


def _recipe(dataset: str, **data_fields: Any) -> ml_collections.ConfigDict:
  """The dataset's recipe with some config.data fields replaced."""
  config = recipes.load(dataset)
  config.data.update(data_fields)
  return config


@dataclasses.dataclass(eq=False)
class SplitConfig(tfds.core.BuilderConfig):
  """How the splits are drawn and bad files treated (see the recipes)."""
  split_seed: int = 0
  skip_bad_files: bool = False


@dataclasses.dataclass(eq=False)
class MsdLiverConfig(SplitConfig):
  """SplitConfig plus the preprocessing of the stored volumes."""
  volume_shape: tuple[int, int, int] = (50, 128, 128)
  hu_range: tuple[float, float] = (-150.0, 200.0)


class Ham10000(tfds.core.GeneratorBasedBuilder):
  """HAM10000 dermatoscopy, labelled "needs immediate treatment" or not."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Lesion-level splits of the paper.'}
  BUILDER_CONFIGS = [SplitConfig(name='default')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download HAM10000 from https://doi.org/10.7910/DVN/DBW86T (or a mirror) and
  place HAM10000_metadata.csv, HAM10000_images_part_1/ and
  HAM10000_images_part_2/ in the manual folder (any letter case).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(
                names=['not_immediate', 'immediate']),
            'dx': tfds.features.ClassLabel(names=list(ham10000.DX)),
            'image_id': tfds.features.Text(),
            'lesion_id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://doi.org/10.7910/DVN/DBW86T')

  def _split_generators(self, dl_manager):
    config = _recipe('ham10000', split_seed=self.builder_config.split_seed,
                     skip_bad_files=self.builder_config.skip_bad_files)
    records = ham10000.read_records(config, os.fspath(dl_manager.manual_dir))
    return {_SPLITS[s]: self._generate_examples(r)
            for s, r in records.items()}

  def _generate_examples(self, records: ham10000.Records):
    for i, image_id in enumerate(records.image_ids):
      yield image_id, {
          'image': records.paths[i], 'label': int(records.labels[i]),
          'dx': records.dx[i], 'image_id': image_id,
          'lesion_id': records.lesion_ids[i]}


class RadImageNet(tfds.core.GeneratorBasedBuilder):
  """RadImageNet CT, MR and ultrasound images, grayscale, 165 classes."""

  name = 'radimagenet'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Splits of RadiologyAI_{train,val,test}.csv.'}
  BUILDER_CONFIGS = [SplitConfig(name='default')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Request RadImageNet at https://www.radimagenet.com/ and place radiology_ai/
  (CT/, MR/, US/) and RadiologyAI_{train,val,test}.csv in the manual folder.
  Without the CSVs, splits are drawn from the folder tree.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 1),
                                         encoding_format='png'),
            # The names come from the data, in _split_generators.
            'label': tfds.features.ClassLabel(),
            'modality': tfds.features.Text(),
            'filename': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.radimagenet.com/')

  def _split_generators(self, dl_manager):
    config = _recipe('radimagenet',
                     split_seed=self.builder_config.split_seed,
                     skip_bad_files=self.builder_config.skip_bad_files)
    index = radimagenet.read_index(config, os.fspath(dl_manager.manual_dir))
    self.info.features['label'].names = list(index.class_names)
    return {_SPLITS[s]: self._generate_examples(index, r)
            for s, r in index.splits.items()}

  def _generate_examples(self, index: radimagenet.Index,
                         records: radimagenet.Records):
    decode = tf.function(lambda p: files.decode_image(p, channels=1))
    for i, path in enumerate(records.paths):
      image = decode(tf.constant(path)).numpy()
      yield path, {
          'image': np.round(image * 255).astype(np.uint8),
          'label': int(records.labels[i]),
          'modality': index.modalities[records.modalities[i]],
          'filename': path}


class MsdLiver(tfds.core.GeneratorBasedBuilder):
  """MSD Task03 Liver CT volumes, resampled and windowed, with labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Volumes preprocessed as in the paper.'}
  BUILDER_CONFIGS = [MsdLiverConfig(name='128x128x50')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download Task03_Liver.tar from http://medicaldecathlon.com/, extract it and
  place dataset.json, imagesTr/ and labelsTr/ in the manual folder (macOS
  `._*` files may stay; they are skipped).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    shape = tuple(self.builder_config.volume_shape)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=shape + (1,),
                                          dtype=np.float32, encoding='zlib'),
            'label': tfds.features.Tensor(shape=shape, dtype=np.uint8,
                                          encoding='zlib'),
            'name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://medicaldecathlon.com/')

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    config = _recipe('msd_liver', split_seed=cfg.split_seed,
                     skip_bad_files=cfg.skip_bad_files,
                     volume_shape=tuple(cfg.volume_shape),
                     hu_range=tuple(cfg.hu_range))
    cases = msd_liver.read_cases(config, os.fspath(dl_manager.manual_dir))
    prep = msd_liver.Preprocessing.from_config(config)
    return {_SPLITS[s]: self._generate_examples(c, prep)
            for s, c in cases.items()}

  def _generate_examples(self, cases, prep: msd_liver.Preprocessing):
    for case in cases:
      image, labels = msd_liver.load_case(case, prep)
      yield case.name, {'image': image[..., None], 'label': labels,
                        'name': case.name}
