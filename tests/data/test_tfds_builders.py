"""The TFDS manual-download builders give the readers' splits and labels."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dp_medtf import recipes
from dp_medtf.data import files
from dp_medtf.data import ham10000
from dp_medtf.data import msd_liver
from dp_medtf.data import radimagenet
from dp_medtf.data import tfds_builders
from tests.data import fixtures


def _prepare(builder, manual_dir):
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _split_sizes(builder):
  return {name: info.num_examples for name, info in builder.info.splits.items()}


def test_builders_need_manual_data_and_say_where(tmp_path):
  for builder_class in (tfds_builders.Ham10000, tfds_builders.RadImageNet,
                        tfds_builders.MsdLiver):
    assert 'manual folder' in builder_class.MANUAL_DOWNLOAD_INSTRUCTIONS
  builder = tfds_builders.Ham10000(data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(files.DataError, match='HAM10000_metadata.csv'):
    _prepare(builder, str(tmp_path))


def test_ham10000_builder(tmp_path):
  data_dir = fixtures.make_ham10000(str(tmp_path))
  builder = _prepare(tfds_builders.Ham10000(data_dir=str(tmp_path / 'tfds')),
                     data_dir)
  records = ham10000.read_records(recipes.load('ham10000'), data_dir)
  assert _split_sizes(builder) == {s: len(r) for s, r in records.items()}
  examples = list(tfds.as_numpy(builder.as_dataset(split='test')))
  by_id = {e['image_id'].decode(): e for e in examples}
  test = records['test']
  assert set(by_id) == set(test.image_ids)
  for image_id, label, lesion in zip(test.image_ids, test.labels,
                                     test.lesion_ids):
    assert by_id[image_id]['label'] == label
    assert by_id[image_id]['lesion_id'].decode() == lesion
    assert by_id[image_id]['image'].shape == (45, 60, 3)


def test_radimagenet_builder(tmp_path):
  data_dir = fixtures.make_radimagenet(str(tmp_path))
  builder = _prepare(
      tfds_builders.RadImageNet(data_dir=str(tmp_path / 'tfds')), data_dir)
  index = radimagenet.read_index(recipes.load('radimagenet'), data_dir)
  assert _split_sizes(builder) == {s: len(r) for s, r in index.splits.items()}
  assert builder.info.features['label'].names == list(index.class_names)
  examples = list(tfds.as_numpy(builder.as_dataset(split='validation')))
  truth = dict(zip(index.splits['validation'].paths,
                   index.splits['validation'].labels))
  for e in examples:
    assert e['image'].shape == (40, 40, 1) and e['image'].dtype == np.uint8
    assert e['label'] == truth[e['filename'].decode()]
  assert {e['modality'].decode() for e in examples} == {'CT', 'MR', 'US'}


def test_msd_liver_builder(tmp_path):
  data_dir = fixtures.make_msd_liver(str(tmp_path), num_cases=12)
  config = tfds_builders.MsdLiverConfig(name='tiny', volume_shape=(4, 8, 8))
  builder = _prepare(
      tfds_builders.MsdLiver(data_dir=str(tmp_path / 'tfds'), config=config),
      data_dir)
  assert _split_sizes(builder) == {'train': 10, 'validation': 1, 'test': 1}
  example = next(iter(tfds.as_numpy(builder.as_dataset(split='test'))))
  recipe = recipes.load('msd_liver')
  recipe.data.volume_shape = (4, 8, 8)
  case = msd_liver.read_cases(recipe, data_dir)['test'][0]
  image, labels = msd_liver.load_case(
      case, msd_liver.Preprocessing.from_config(recipe))
  assert example['name'].decode() == case.name
  np.testing.assert_array_equal(example['image'][..., 0], image)
  np.testing.assert_array_equal(example['label'], labels)
