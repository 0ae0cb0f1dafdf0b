"""Writes a dataset once into a prepared folder of ArrayRecord shards.

`prepare` reads every split with the dataset's own reader (the same index,
splits, labels and checks as training on the original files) and stores each
example exactly as its `load_example` returns it, before normalisation;
dp_medtf.data.records holds the folder's layout, the record encoding and the
reader. The recipe's fields that shape the examples (image size, split seed
and fractions, ...) are recorded, and a run whose recipe differs is refused;
per-modality standardisation and caching are applied when reading, so they
may change.

The shards are written one at a time, each under a temporary name and moved
into place when complete, and the metadata file last: a folder without it is
never mistaken for a finished one. Preparing the same folder again after an
interruption keeps the finished shards and writes the rest; with another
recipe or dataset it starts over. The output may be a gs:// folder (shards
are written locally first, then copied). The app is dp_medtf.data.prepare.

TensorFlow and the reader are imported when first needed, so that the app
checks its flags before loading them.

Example:

  The demo dataset at 8 x 8 pixels; a second call finds it finished:

  >>> from dp_medtf import recipes
  >>> config = recipes.load('demo')
  >>> config.data.image_size, config.input_shape = 8, (8, 8, 3)
  >>> meta = prepare(config, '', 'demo_prepared', log=lambda _: None)
  >>> [meta['splits'][s]['num_examples'] for s in SPLITS]
  [2400, 300, 300]
  >>> meta = prepare(config, '', 'demo_prepared', log=print)
  demo_prepared is already prepared for this recipe.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable

from absl import logging
import ml_collections
import numpy as np

from dp_medtf import cli
from dp_medtf import json_files

SPLITS = ('train', 'validation', 'test')
# Modality of every example, for the datasets whose reader has no index of
# modalities (RadImageNet's has one).
SINGLE_MODALITY = {'demo': 'synthetic', 'ham10000': 'dermatoscopy',
                   'msd_liver': 'CT'}
_SHARD_BYTES = 1 << 30
_BATCH = 64


def source_config(config: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
  """The recipe the raw splits are read with: no cache, no modality affine."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data.cache_bytes = 0
    if 'normalize_by_modality' in config.data:
      config.data.normalize_by_modality = False
  return config


def _depends_on_seed(config, data_dir: str, split) -> bool:
  """Whether the training examples change with config.seed (random crops)."""
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  other = copy.deepcopy(config)
  with other.unlocked():
    other.seed = int(config.seed) + 1
  again = data.load_split(other, 'train', data_dir)
  a = split.load_example(0)[0].numpy()
  b = again.load_example(0)[0].numpy()
  return not np.array_equal(a, b)


def _modalities(config, data_dir: str, splits: dict
                ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
  """(class names, modality names, per split the modality of each example)."""
  if config.dataset == 'radimagenet':
    from dp_medtf.data import radimagenet  # pylint: disable=g-import-not-at-top
    index = radimagenet.read_index(config, data_dir)
    return (list(index.class_names), list(index.modalities),
            {s: index.splits[s].modalities.astype(np.int32) for s in splits})
  return ([], [SINGLE_MODALITY.get(config.dataset, config.dataset)],
          {s: np.zeros(len(split), np.int32) for s, split in splits.items()})


def _write_npy(path: str, array: np.ndarray) -> None:
  import io  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  with tf.io.gfile.GFile(path + '.incomplete', 'wb') as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(path + '.incomplete', path, overwrite=True)


def _shard_ok(path: str, count: int) -> bool:
  """Whether a finished shard opens and holds `count` records."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import records  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    return False
  if cli.is_remote(path):
    return True  # GCS objects appear only once completely written.
  try:
    reader = records.array_record_module.ArrayRecordReader(
        path, records.READER_OPTIONS)
    ok = reader.num_records() == count
    reader.close()
    return ok
  except RuntimeError:
    return False


def _write_shard(split, start: int, stop: int, path: str) -> None:
  """Writes examples [start, stop) of `split` into one shard at `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import records  # pylint: disable=g-import-not-at-top
  remote = cli.is_remote(path)
  scratch = tempfile.mkdtemp(prefix='dp_medtf_prepare_') if remote else None
  temporary = (os.path.join(scratch, os.path.basename(path)) if remote
               else path + '.incomplete')
  ds = tf.data.Dataset.range(start, stop).map(
      split.load_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).batch(_BATCH).prefetch(2)
  writer = records.array_record_module.ArrayRecordWriter(
      temporary, records.WRITER_OPTIONS)
  try:
    for xs, ys in ds.as_numpy_iterator():
      for x, y in zip(xs, ys):
        writer.write(records.encode(x, y))
  finally:
    writer.close()
  if remote:
    tf.io.gfile.copy(temporary, path, overwrite=True)
    shutil.rmtree(scratch, ignore_errors=True)
  else:
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _clear(output_dir: str) -> None:
  """Removes what an earlier prepare left in `output_dir`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import records  # pylint: disable=g-import-not-at-top
  for name in tf.io.gfile.listdir(output_dir):
    if (name.endswith((records.SHARD_SUFFIX, '.npy', '.incomplete')) or
        name in (records.PROGRESS, records.PROGRESS + '.tmp')):
      tf.io.gfile.remove(os.path.join(output_dir, name))


def prepare(config: ml_collections.ConfigDict, data_dir: str,
            output_dir: str, examples_per_shard: int = 0,
            log: Callable[[str], None] = logging.info) -> dict[str, Any]:
  """Writes the prepared folder of a dataset (see the module docstring).

  Args:
    config: the recipe.
    data_dir: the dataset in its original layout.
    output_dir: the prepared folder (created if missing).
    examples_per_shard: records per shard; 0 picks about 1 GiB of float32.
    log: where progress lines go.

  Returns:
    The metadata written to output_dir/prepared.json.

  Raises:
    files.DataError: as the dataset's reader, or naming --output_dir when it
      holds something else (another recipe's prepared dataset, other files).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import records  # pylint: disable=g-import-not-at-top
  if records.is_prepared(data_dir):
    raise records.PreparedDataError(
        f'--data_dir={data_dir} is already a prepared folder; give the '
        'dataset in its original layout.')
  if tf.io.gfile.exists(os.path.join(output_dir, records.METADATA)):
    meta = records.read_metadata(output_dir)
    try:
      records.check_recipe(meta, config, output_dir)
    except records.PreparedDataError as e:
      raise records.PreparedDataError(
          f'--output_dir: {e} Choose another folder or delete it.') from None
    log(f'{output_dir} is already prepared for this recipe.')
    return meta

  source = source_config(config)
  splits = {s: data.load_split(source, s, data_dir) for s in SPLITS}
  spec = tf.data.Dataset.range(1).map(splits['train'].load_example)
  x_spec, y_spec = spec.element_spec
  x_shape, y_shape = x_spec.shape.as_list(), y_spec.shape.as_list()
  seeded = _depends_on_seed(source, data_dir, splits['train'])
  class_names, modality_names, modalities = _modalities(source, data_dir,
                                                        splits)
  per_shard = examples_per_shard or max(
      1, _SHARD_BYTES // (4 * math.prod(x_shape)))
  plan = {
      'format': records.FORMAT_VERSION, 'dataset': config.dataset,
      'fingerprint': records.fingerprint(config, seeded), 'seeded': seeded,
      'source': data_dir, 'x_shape': x_shape, 'y_shape': y_shape,
      'splits': {s: {'num_examples': len(split),
                     'num_shards': max(1, -(-len(split) // per_shard)),
                     'examples_per_shard': per_shard}
                 for s, split in splits.items()}}

  tf.io.gfile.makedirs(output_dir)
  progress = os.path.join(output_dir, records.PROGRESS)
  if tf.io.gfile.exists(progress):
    try:
      previous = json_files.read_json(progress)
    except json_files.JsonFileError:
      previous = None
    if previous != json.loads(json.dumps(json_files.to_strict(plan))):
      log(f'{output_dir}: an interrupted prepare of another recipe; starting '
          'over.')
      _clear(output_dir)
    else:
      log(f'{output_dir}: resuming an interrupted prepare.')
  elif tf.io.gfile.listdir(output_dir):
    raise records.PreparedDataError(
        f'--output_dir={output_dir} is not empty and holds no prepared '
        'dataset; choose an empty or new folder.')
  if not tf.io.gfile.exists(progress):
    json_files.write_json(progress, plan)

  meta = dict(plan, created=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
              class_names=class_names, modalities=modality_names,
              writer_options=records.WRITER_OPTIONS,
              normalization={
                  'mean': records.jsonable(config.normalization.mean),
                  'std': records.jsonable(config.normalization.std),
                  'modality_stats': records.jsonable(
                      config.data.get('modality_stats', {}))},
              splits={})
  for name, split in splits.items():
    count = plan['splits'][name]['num_shards']
    shards = []
    for k in range(count):
      start, stop = k * per_shard, min(len(split), (k + 1) * per_shard)
      shard = records.shard_name(name, k, count)
      path = os.path.join(output_dir, shard)
      if _shard_ok(path, stop - start):
        log(f'{shard}: kept from the interrupted prepare')
      else:
        began = time.perf_counter()
        _write_shard(split, start, stop, path)
        log(f'{shard}: {stop - start} examples, '
            f'{(stop - start) / (time.perf_counter() - began):.0f}/s')
      shards.append({'name': shard, 'num_records': stop - start,
                     'bytes': tf.io.gfile.stat(path).length})
    _write_npy(os.path.join(output_dir, records.modalities_name(name)),
               modalities[name])
    if not y_shape:
      _write_npy(os.path.join(output_dir, records.labels_name(name)),
                 np.asarray(split.labels, np.int32))
    meta['splits'][name] = {'num_examples': len(split), 'x_shape': x_shape,
                            'y_shape': y_shape, 'shards': shards}
  json_files.write_json(os.path.join(output_dir, records.METADATA), meta)
  tf.io.gfile.remove(progress)
  return meta
