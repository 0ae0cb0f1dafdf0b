"""Miniature copies of HAM10000, RadImageNet and MSD Liver, built at test time.

The pixels are real medical images that ship inside packages: scikit-image's
fundus photograph and immunohistochemistry slide stand in for dermatoscopy,
pydicom's CT, MR and ultrasound test files for RadImageNet, and nibabel's
brain MR volumes (mapped to a Hounsfield-like range) for liver CT. Each
builder reproduces its dataset's layout and quirks: HAM10000's optional
`dataset` column and lower-case folder names, RadImageNet's ultrasound one
level less deep, MSD's `._*` files and misspelt "relase" key.

Example:

  >>> data_dir = make_ham10000(tmp_path)
  >>> sorted(os.listdir(data_dir))
  ['HAM10000_images_part_1', 'HAM10000_images_part_2', 'HAM10000_metadata.csv']
"""

from __future__ import annotations

import csv
import functools
import json
import os

import nibabel as nib
import numpy as np
from PIL import Image

HAM_DX_LESIONS = {'nv': 16, 'bkl': 6, 'mel': 6, 'bcc': 4, 'akiec': 3, 'df': 3,
                  'vasc': 2}
RAD_CLASSES = ('CT/abd/normal', 'CT/abd/pancreatitis', 'CT/lung/nodule',
               'MR/knee/normal', 'MR/knee/acl_tear', 'US/gallstone',
               'US/normal')
APPLE_DOUBLE = b'\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        '


@functools.lru_cache(maxsize=None)
def _skin_like_sources() -> tuple[np.ndarray, ...]:
  from skimage import data  # pylint: disable=g-import-not-at-top
  return data.retina(), data.immunohistochemistry()


@functools.lru_cache(maxsize=None)
def _dicom(name: str) -> np.ndarray:
  import pydicom  # pylint: disable=g-import-not-at-top
  from pydicom import data  # pylint: disable=g-import-not-at-top
  return pydicom.dcmread(data.get_testdata_file(name)).pixel_array


def _nibabel_data(name: str) -> str:
  return os.path.join(os.path.dirname(nib.__file__), 'tests', 'data', name)


def _to_uint8(a: np.ndarray) -> np.ndarray:
  a = a.astype(np.float64)
  low, high = np.percentile(a, [1, 99])
  return (np.clip((a - low) / max(high - low, 1e-6), 0, 1) * 255).astype(
      np.uint8)


def _random_view(image: np.ndarray, rng: np.random.Generator,
                 size: tuple[int, int]) -> Image.Image:
  """A random crop (half to all of the image), flipped or not, resized."""
  h, w = image.shape[:2]
  ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
  top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  crop = image[top:top + ch, left:left + cw]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  return Image.fromarray(np.ascontiguousarray(crop)).resize(size,
                                                            Image.BILINEAR)


def make_ham10000(root: str, *, dataset_column: bool = True,
                  lowercase: bool = False, dx_lesions=None,
                  seed: int = 0) -> str:
  """A miniature HAM10000: metadata CSV and two image folders.

  Args:
    root: a folder to build in.
    dataset_column: include the newer `dataset` column.
    lowercase: lower-case image folder names, as some mirrors have.
    dx_lesions: dx -> number of lesions (HAM_DX_LESIONS by default); every
      third lesion has two images.
    seed: the random seed of the crops.

  Returns:
    The dataset folder.
  """
  rng = np.random.default_rng(seed)
  data_dir = os.path.join(root, 'HAM10000')
  folders = ['HAM10000_images_part_1', 'HAM10000_images_part_2']
  if lowercase:
    folders = [f.lower() for f in folders]
  for folder in folders:
    os.makedirs(os.path.join(data_dir, folder), exist_ok=True)
  sources = _skin_like_sources()
  header = ['lesion_id', 'image_id', 'dx', 'dx_type', 'age', 'sex',
            'localization'] + (['dataset'] if dataset_column else [])
  rows = []
  image_number = 24306
  lesion_number = 0
  for dx, count in sorted((dx_lesions or HAM_DX_LESIONS).items()):
    for _ in range(count):
      lesion_id = f'HAM_{lesion_number:07d}'
      for _ in range(2 if lesion_number % 3 == 0 else 1):
        image_id = f'ISIC_{image_number:07d}'
        folder = folders[image_number % 2]
        source = sources[image_number % len(sources)]
        _random_view(source, rng, (60, 45)).save(
            os.path.join(data_dir, folder, f'{image_id}.jpg'), quality=90)
        rows.append([lesion_id, image_id, dx, 'histo', '50.0', 'male',
                     'back'] + (['vidir_modern'] if dataset_column else []))
        image_number += 1
      lesion_number += 1
  order = rng.permutation(len(rows))
  with open(os.path.join(data_dir, 'HAM10000_metadata.csv'), 'w',
            newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows[i] for i in order)
  return data_dir


def _radiology_source(modality: str) -> np.ndarray:
  if modality == 'CT':
    return _to_uint8(_dicom('CT_small.dcm'))
  if modality == 'MR':
    return _to_uint8(_dicom('MR_small.dcm'))
  return _dicom('ExplVR_BigEnd.dcm')  # RGB ultrasound.


def make_radimagenet(root: str, *, with_csvs: bool = True,
                     per_class: int = 6, size: int = 40,
                     seed: int = 0) -> str:
  """A miniature RadImageNet: radiology_ai/ and the three split files.

  Per class, the split files list per_class - 2 images for training and one
  each for validation and test. Every label folder also holds a `._*` file.

  Args:
    root: a folder to build in.
    with_csvs: write RadiologyAI_{train,val,test}.csv.
    per_class: images per class.
    size: image height and width.
    seed: the random seed of the crops.

  Returns:
    The folder above radiology_ai/.
  """
  rng = np.random.default_rng(seed)
  data_dir = os.path.join(root, 'radimagenet')
  rows = {'train': [], 'val': [], 'test': []}
  for label in RAD_CLASSES:
    modality = label.split('/')[0]
    folder = os.path.join(data_dir, 'radiology_ai', label)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, '._image000.png'), 'wb') as f:
      f.write(APPLE_DOUBLE)
    source = _radiology_source(modality)
    tag = label.replace('/', '_').lower()
    for i in range(per_class):
      name = f'{tag}{i:03d}.png'
      _random_view(source, rng, (size, size)).save(os.path.join(folder, name))
      split = 'val' if i == per_class - 2 else 'test' if i == per_class - 1 \
          else 'train'
      rows[split].append([f'radiology_ai/{label}/{name}',
                          label.replace('/', '-')])
  if with_csvs:
    for split, entries in rows.items():
      write_csv(os.path.join(data_dir, f'RadiologyAI_{split}.csv'),
                ['filename', 'label'], entries)
  return data_dir


def write_csv(path: str, header: list[str], rows) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _hounsfield_sources() -> list[np.ndarray]:
  """3D MR volumes rescaled to a CT-like range of -1000 to 400 HU."""
  volumes = [np.asarray(nib.load(_nibabel_data('anatomical.nii')).dataobj,
                        np.float32)]
  frames = np.asarray(nib.load(_nibabel_data('example4d.nii.gz')).dataobj,
                      np.float32)
  volumes += [frames[..., t] for t in range(frames.shape[-1])]
  out = []
  for v in volumes:
    low, high = np.percentile(v, [2, 98])
    out.append(np.clip((v - low) / (high - low), 0, 1) * 1400 - 1000)
  return out


def liver_case(rng: np.random.Generator, shape: tuple[int, int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
  """An [X, Y, Z] volume in HU and its labels (liver 1, tumour 2)."""
  sources = _hounsfield_sources()
  source = sources[rng.integers(len(sources))]
  starts = [rng.integers(0, max(s - t, 0) + 1)
            for s, t in zip(source.shape, shape)]
  crop = source[tuple(slice(a, a + t) for a, t in zip(starts, shape))]
  image = np.full(shape, -1000.0, np.float32)
  image[tuple(slice(0, s) for s in crop.shape)] = crop
  grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape],
                              indexing='ij'))
  centre = rng.uniform(-0.2, 0.2, 3)[:, None, None, None]
  radius = np.sqrt(np.sum((grid - centre) ** 2, 0))
  labels = np.zeros(shape, np.uint8)
  labels[radius < 0.7] = 1
  labels[radius < 0.25] = 2
  image[labels == 1] = np.clip(image[labels == 1], 20, 180)
  return image.round().astype(np.int16), labels


def write_nifti(path: str, array: np.ndarray,
                spacing=(0.8, 0.8, 2.5)) -> None:
  nib.save(nib.Nifti1Image(array, np.diag(list(spacing) + [1.0])), path)


def make_msd_liver(root: str, *, num_cases: int = 12,
                   shape: tuple[int, int, int] = (24, 24, 10),
                   seed: int = 0) -> str:
  """A miniature MSD Task03_Liver with its quirks.

  Args:
    root: a folder to build in.
    num_cases: training volumes.
    shape: [X, Y, Z] of the first volume; every other one has two more
      slices, so that resampling has work to do.
    seed: the random seed of the crops and label placement.

  Returns:
    The Task03_Liver folder.
  """
  rng = np.random.default_rng(seed)
  data_dir = os.path.join(root, 'Task03_Liver')
  for folder in ('imagesTr', 'labelsTr', 'imagesTs'):
    os.makedirs(os.path.join(data_dir, folder), exist_ok=True)
  training = []
  for i in range(num_cases):
    case_shape = shape[:2] + (shape[2] + 2 * (i % 2),)
    image, labels = liver_case(rng, case_shape)
    write_nifti(os.path.join(data_dir, 'imagesTr', f'liver_{i}.nii.gz'), image)
    write_nifti(os.path.join(data_dir, 'labelsTr', f'liver_{i}.nii.gz'),
                labels)
    training.append({'image': f'./imagesTr/liver_{i}.nii.gz',
                     'label': f'./labelsTr/liver_{i}.nii.gz'})
  image, _ = liver_case(rng, shape)
  write_nifti(os.path.join(data_dir, 'imagesTs', 'liver_200.nii.gz'), image)
  for folder in ('imagesTr', 'labelsTr', 'imagesTs'):
    with open(os.path.join(data_dir, folder, '._liver_0.nii.gz'), 'wb') as f:
      f.write(APPLE_DOUBLE)
  meta = {
      'name': 'Liver', 'description': 'Liver and tumour segmentation',
      'reference': 'IRCAD', 'licence': 'CC-BY-SA 4.0', 'relase': '1.0',
      'tensorImageSize': '3D', 'modality': {'0': 'CT'},
      'labels': {'0': 'background', '1': 'liver', '2': 'cancer'},
      'numTraining': num_cases, 'numTest': 1, 'training': training,
      'test': ['./imagesTs/liver_200.nii.gz'],
  }
  with open(os.path.join(data_dir, 'dataset.json'), 'w') as f:
    json.dump(meta, f, indent=4)
  return data_dir


def truncate(path: str, keep: float = 0.5) -> None:
  """Cuts a file to a fraction of its bytes, as an interrupted copy does."""
  with open(path, 'rb') as f:
    content = f.read()
  with open(path, 'wb') as f:
    f.write(content[:int(len(content) * keep)])


def overwrite(path: str, content: bytes = b'<html>404 Not Found</html>'
              ) -> None:
  """Replaces a file's bytes (a failed download saved under its name)."""
  with open(path, 'wb') as f:
    f.write(content)
