"""Data for aavae.py and linear_eval.py: the splits of the paper's Appendix A.1 ("Datasets"), loaded and
batched where the images are.

Two paths give the same batches: [x, *views, labels], floats in [0, 1], where x is the original (the
decoder's target, with the evaluation preprocessing only) and each view has been cropped and flipped by the
augmentation's geometric half, which aavae.py defines (AugmentSpec.crop_boxes and crop_and_flip: a Split is
given the AugmentSpec of its run). The photometric half (colour jitter, grayscale, blur) runs on the training
device in aavae.py.
 - memory: uint8 images held on the device (CIFAR-10, STL-10, folders under 8 GiB); crops done there, in
   whole-batch tensor operations, with a seeded permutation per epoch. A training run asks for the whole
   images and crops them in aavae.py's step (TrainBatches(..., whole=True)).
 - stream: an ImageFolder decoded by DataLoader workers, which also crop (ImageNet-sized folders). A
   training run is one pass of one DataLoader over all its epochs: its workers start once, and the next
   epoch's batches are decoded while the last ones of this epoch train.
"""
import os
import shutil

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from tqdm import tqdm

from util.misc import (UserError, block, gather_blocks, generator, ignore_stop_signals, is_main, local_rank_zero_first, padded,
                   rank_world)


STATS = {  # per-dataset normalisation (mean, std)
    "mnist": ((0.0,), (1.0,)),  # none: a Bernoulli likelihood reads the pixels in [0, 1]
    "cifar10": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    "stl10": ((0.43, 0.42, 0.39), (0.27, 0.26, 0.27)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
IMAGE_SIZE = {"cifar10": 32, "stl10": 96, "imagenet": 224, "mnist": 28}
CHANNELS = {"mnist": 1}  # the others: 3
STEM = {"cifar10": "cifar", "stl10": "stl", "imagenet": "imagenet"}
STEM_FACTOR = {"cifar": 8, "stl": 16, "imagenet": 32}  # input size / the decoder's stage-1 size
MEMORY_LIMIT = 8 << 30  # bytes of uint8 images a folder may take on the device before it is streamed


def stem_for_size(size):
    return "cifar" if size <= 64 else "stl" if size <= 128 else "imagenet"


def resolve_data(args):
    """Fills the data defaults into args once, from the flags and the dataset: image_size, stem,
    jitter_strength, blur and in_memory. Stops with one sentence if the data is not there or cannot be used.

    A folder's size is its first training image's shorter side unless --image_size says; its stem follows
    the size; it is held in memory when its uint8 images fit in MEMORY_LIMIT. Images of 64 px or less get
    jitter strength 0.5 and no blur, larger ones 1.0 with blur (Appendix A.1, SimCLR's settings per dataset).
    """
    if args.image_size is not None and args.dataset != "folder":
        raise UserError(f"--image_size is for --dataset folder; {args.dataset} has a fixed size")
    if args.dataset == "imagenet" and args.in_memory:
        raise UserError("--in_memory is not available for imagenet: its images are decoded by DataLoader workers")
    count = None
    if args.dataset == "folder":
        train = _find_folder(_require_tree(args), "train")
        args.image_size = args.image_size or min(_read_rgb(train.samples[0][0]).size)
        count = len(train)
    else:
        args.image_size = IMAGE_SIZE[args.dataset]
    size = args.image_size
    if args.dataset == "mnist":  # no ResNet stem, no colour: the fully-connected models of methods/ take it, unaugmented
        args.jitter_strength, args.blur = args.jitter_strength or 0.0, bool(args.blur)
        args.in_memory = True if args.in_memory is None else args.in_memory
        return args
    if args.stem == "auto":
        args.stem = STEM.get(args.dataset) or stem_for_size(size)
    if size % STEM_FACTOR[args.stem]:
        raise UserError(f"image size {size} is not a multiple of {STEM_FACTOR[args.stem]}, which the decoder "
                        f"for the {args.stem} stem needs; choose --image_size accordingly")
    small = size <= 64
    args.jitter_strength = args.jitter_strength if args.jitter_strength is not None else 0.5 if small else 1.0
    args.blur = args.blur if args.blur is not None else not small
    if args.in_memory is None:
        args.in_memory = args.dataset != "imagenet" and (count is None or count * 3 * size * size <= MEMORY_LIMIT)
    return args


def num_classes(args):
    """How many classes the labels take: 10 for CIFAR-10 and STL-10, the sub-folders of train/ otherwise."""
    if args.dataset in ("cifar10", "stl10", "mnist"):
        return 10
    root = os.path.join(_require_tree(args), "train")
    return sum(e.is_dir() for e in os.scandir(root)) if os.path.isdir(root) else 0


def _require_tree(args):
    if not os.path.isdir(args.data_path):
        raise UserError(f"--data_path {args.data_path} does not exist; --dataset {args.dataset} expects "
                        f"{args.data_path}/train and {args.data_path}/val with one sub-folder per class")
    return args.data_path


def _find_folder(root, split):
    path = os.path.join(root, split)
    try:
        return torchvision.datasets.ImageFolder(path, loader=_read_rgb)
    except (FileNotFoundError, OSError) as e:
        images = torchvision.datasets.folder.IMG_EXTENSIONS
        if os.path.isdir(path) and any(f.lower().endswith(images) for f in os.listdir(path)):  # ILSVRC's val/ unpacked
            raise UserError(f"{path} holds image files but no class sub-folders, and the labels come from one "
                            "sub-folder per class: ILSVRC2012's validation archive unpacks flat, and "
                            "torchvision.datasets.ImageNet(DATA_PATH, split='val') sorts it into val/WNID/ from "
                            "ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz in DATA_PATH") from None
        raise UserError(f"expected an ImageFolder tree (one sub-folder of images per class) at {path}: {e}") from None


def _read_rgb(path):
    """PIL image in RGB (grayscale and RGBA are converted); a corrupt file becomes a UserError naming it."""
    from PIL import Image, UnidentifiedImageError
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


class ViewFolder(torch.utils.data.Dataset):
    """Images of an ImageFolder as uint8 tensors. An item is asked for by a key (epoch, views, index) and is
    the original of image `index` (Resize + CenterCrop), then `views` crops of it.

    Crop boxes and flips come from a generator seeded by (seed, epoch, index), so a worker's output does
    not depend on which worker ran it, nor on whether the run was resumed, and a worker needs no state
    from the main process (one pass of its workers can span several epochs). A file that cannot be decoded
    yields an error string instead of raising inside the worker, so the main process can name it.
    """

    def __init__(self, samples, spec, resize, seed):
        self.samples, self.spec, self.size, self.resize, self.seed = samples, spec, spec.size, resize, seed

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, views, index = key
        path, label = self.samples[index]
        blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        try:
            img = _read_rgb(path)
        except UserError as e:
            return (blank,) * (1 + views) + (label, str(e))
        out = [TF.pil_to_tensor(TF.center_crop(TF.resize(img, self.resize), self.size))]
        if views:  # an image decoded into memory has none: no stream to seed (a millisecond an image)
            g = generator("cpu", "folder_crops", self.seed, epoch, index)
            for box, flip in zip(self.spec.crop_boxes(views, img.height, img.width, g),
                                 torch.rand(views, generator=g) < 0.5):
                i, j, h, w = box.tolist()
                v = TF.resized_crop(img, i, j, h, w, [self.size, self.size])
                out.append(TF.pil_to_tensor(TF.hflip(v) if flip else v))
        return tuple(out) + (label, "")

    def subset(self, keep):
        return ViewFolder([self.samples[i] for i in keep], self.spec, self.resize, self.seed)


def _check_batch(batch):
    """A ViewFolder batch (images..., labels, errors) -> [images..., labels], or its first error raised."""
    errors = [e for e in batch[-1] if e]
    if errors:
        raise UserError(errors[0])
    return batch[:-1]


class Split:
    """One split of a dataset. `source` is either a uint8 tensor (N, 3, H, W) of the images, held in memory
    (on the device or the CPU), or a ViewFolder streamed through DataLoader workers. Batches are float
    tensors in [0, 1] on `device`: the original, then the views, then the labels.
    `original` maps a uint8 batch to its evaluation preprocessing (STL-10's resize and crop); `paths` names
    the image files where there are files (for --subset_file)."""

    def __init__(self, source, labels, spec, device, seed, paths=None, original=None):
        self.images = source if torch.is_tensor(source) else None
        self.folder = None if torch.is_tensor(source) else source
        # In memory, the labels live beside the images, so that a batch is indexed without a host copy.
        self.labels = labels.to(source.device) if self.images is not None else labels
        self.spec, self.device, self.seed, self.paths = spec, device, seed, paths
        self.original = original or (lambda u8: u8)

    def subset(self, keep):
        """The images at the (sorted) indices `keep`, as a Split of the same kind."""
        k = keep.tolist()
        source = self.images[keep] if self.images is not None else self.folder.subset(k)
        return Split(source, self.labels[keep], self.spec, self.device, self.seed,
                     None if self.paths is None else [self.paths[i] for i in k], self.original)

    def __len__(self):
        return len(self.images) if self.images is not None else len(self.folder)

    def batch(self, idx, views, g, whole=False):
        """[x01, *views01] of the in-memory images at idx: each view a random resized crop and flip, drawn
        from the generator g for the whole batch at once; or, `whole`, [x01, the whole images to crop]."""
        raw = self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)
        x = self.original(raw).float() / 255
        raw = raw.float() / 255
        return [x, raw] if whole else [x, *self.spec.crop_and_flip(raw, views, g)]

    def epoch_order(self, epoch):
        return torch.randperm(len(self), generator=generator("cpu", "order", self.seed, epoch))

    @property
    def index_device(self):
        """Where index tensors go: beside the images in memory (moved there once per pass, not per batch)."""
        return self.images.device if self.images is not None else torch.device("cpu")

    def batches(self, indices, batch, views, keys, workers=0, epoch=0):
        """[x01, *views01, labels] for `indices`, in order, `batch` at a time (see iterate)."""
        indices = indices.to(self.index_device)
        return self.iterate(((epoch, indices[k:k + batch]) for k in range(0, len(indices), batch)), views, keys, workers)

    def iterate(self, plan, views, keys, workers=0, first=0, whole=False):
        """[x01, *views01, labels] for each (epoch, index tensor on index_device) of `plan`, an iterable that
        may span many epochs. In memory, the crops of the j-th batch draw from generator(device, *keys,
        first + j), keys = (stream name, ...), or with `whole` the batch is [x01, whole01, labels], left to
        crop; streamed, the crops draw from (seed, epoch, index) in the workers of one DataLoader for the
        whole plan."""
        if self.images is not None:
            for j, (_, idx) in enumerate(plan):
                g = None if whole else generator(self.device, *keys, first + j)
                yield [*self.batch(idx, views, g, whole), self.labels[idx].to(self.device, non_blocking=True)]
            return
        keys = ([(epoch, views, i) for i in idx.tolist()] for epoch, idx in plan)  # ViewFolder keys, batch by batch
        loader = torch.utils.data.DataLoader(self.folder, batch_sampler=keys, num_workers=workers,
                                             pin_memory=self.device.type == "cuda", worker_init_fn=ignore_stop_signals)
        for b in loader:
            *images, labels = _check_batch(b)
            yield [t.to(self.device, non_blocking=True).float() / 255 for t in images] + [labels.to(self.device, non_blocking=True)]


class TrainBatches:
    """Training batches [x01, *views01, labels] for steps start, start+1, ...: this rank's share of each
    epoch's seeded permutation (an epoch is steps_per_epoch full global batches; the remainder is dropped)."""

    def __init__(self, split, global_batch, rank, world, views, workers):
        self.split, self.b, self.rank, self.world, self.views, self.workers = split, global_batch // world, rank, world, views, workers
        self.steps_per_epoch = len(split) // global_batch
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(split)} images, fewer than one global batch of {global_batch}")

    def rank_indices(self, epoch, start_it=0):
        """Indices this rank sees in epoch from iteration start_it on: global batch k holds
        order[k * B_global : (k + 1) * B_global], of which rank r takes the r-th slice of B_local."""
        order = self.split.epoch_order(epoch)[: self.steps_per_epoch * self.b * self.world]
        return order.view(self.steps_per_epoch, self.world, self.b)[start_it:, self.rank].reshape(-1)

    def __call__(self, start_step, keys=(), whole=False):
        """Batches from start_step on, one pass over all epochs; in memory, step s crops with
        generator(device, *keys, s), or, `whole`, leaves the whole images to the caller to crop."""
        def plan():
            step = start_step
            while True:
                epoch, it = divmod(step, self.steps_per_epoch)
                idx = self.rank_indices(epoch, it).to(self.split.index_device)
                yield from ((epoch, idx[k:k + self.b]) for k in range(0, len(idx), self.b))
                step = (epoch + 1) * self.steps_per_epoch

        return self.split.iterate(plan(), self.views, keys, self.workers, first=start_step, whole=whole)


def label_subset(train, args):
    """Indices of the labelled training images (Table 2's fine-tuning, a probe on the same images, the
    semi-supervised AAE's labelled phase): a --subset_file's names, or a seeded per-class fraction (per_class_subset)."""
    if args.subset_file:
        try:
            with open(args.subset_file) as f:
                names = {line.strip() for line in f if line.strip()}
        except OSError as e:
            raise UserError(f"cannot read --subset_file {args.subset_file}: {e.strerror}") from None
        if train.paths is None:
            raise UserError("--subset_file names image files: it needs --dataset imagenet or folder")
        # a line names a file (SimCLR's ImageNet lists) or CLASS/FILE (unique in any ImageFolder tree)
        keys = [(os.path.basename(path), "/".join(path.replace(os.sep, "/").split("/")[-2:])) for path in train.paths]
        keep = [k for k, key in enumerate(keys) if key[0] in names or key[1] in names]
        if not keep:
            raise UserError(f"no training image is named in --subset_file {args.subset_file}")
        outside = sorted(names - {name for key in keys for name in key})
        if outside:
            raise UserError(f"--subset_file {args.subset_file} names {len(outside)} image(s) that are not in the training "
                            f"split, {outside[0]} the first: a label list must name training images only")
        return torch.tensor(keep)
    return per_class_subset(train.labels, args.label_fraction, args.seed)


def per_class_subset(labels, fraction, seed, count=None):
    """A seeded draw of round(fraction x members) images of each class (at least one), or of `count` of each, as
    sorted indices."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        members = (labels == c).nonzero()[:, 0]
        take = count or max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=g)[:take]])
    return torch.cat(keep).sort().values


# ----------------------------------------------------------------------------------------------------
# The splits of Appendix A.1 ("Datasets")


def stl10_original(u8):
    """STL-10's evaluation preprocessing, on a uint8 batch: Resize(105) + CenterCrop(96)."""
    return TF.center_crop(TF.resize(u8, [105], antialias=True), [96])


def _held_out(n, held):
    """A seeded hold-out of `held` of n images, as torch.utils.data.random_split(..., manual_seed(42)) draws
    it: returns (keep, held) index tensors."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(42))
    return perm[:n - held].sort().values, perm[n - held:].sort().values


def load_data(args, device, spec, probe=False):
    """Returns (train Split, second Split) for args resolved by resolve_data, whose views are cropped by
    spec (aavae.AugmentSpec; aavae.load_data makes it); stops with one sentence if the data is not there.

    Pretraining (Appendix A.1): the second split is the 5,000 held-out images (CIFAR-10: of the 50,000
    training images; STL-10: of the 100,000 unlabelled ones; ImageNet: of its training split); a folder's
    is val/. With probe=True, the labelled splits of the linear probe: CIFAR-10 the same 45,000 / the 10,000
    test images; STL-10 4,500 of the labelled train split / the 8,000 test images; ImageNet train / val;
    folder train / val.
    """
    root = args.data_path
    if args.dataset == "mnist":  # train (50,000) and val (10,000) for pretraining and probes alike
        on = device if args.in_memory else torch.device("cpu")
        with local_rank_zero_first():
            parts = [read_mnist(root, s) for s in ("train", "val")]
        return tuple(Split(images.to(on), labels, spec, device, args.seed) for images, labels in parts)
    if args.dataset in ("cifar10", "stl10"):
        original = None if args.dataset == "cifar10" else stl10_original
        on = device if args.in_memory else torch.device("cpu")
        split = lambda images, labels: Split(images.to(on), labels, spec, device, args.seed, original=original)
        if probe:
            images, labels = _torchvision_dataset(args.dataset, root, "train")
            keep = _held_out(50000, 5000)[0] if args.dataset == "cifar10" else _held_out(5000, 500)[0]
            return split(images[keep], labels[keep]), split(*_torchvision_dataset(args.dataset, root, "test"))
        images, labels = _torchvision_dataset(args.dataset, root, "pretrain")
        # STL-10: the held-out images come from the first 100,000 ('unlabeled'); the labelled 5,000 all train.
        keep, held = _held_out(50000 if args.dataset == "cifar10" else 100000, 5000)
        keep = torch.cat([keep, torch.arange(100000, len(images))]) if args.dataset == "stl10" else keep
        return split(images[keep], labels[keep]), split(images[held], labels[held])
    train_set = _find_folder(_require_tree(args), "train")
    size = args.image_size
    if args.dataset == "imagenet" and not probe:
        keep, held = _held_out(len(train_set), 5000)
        train_samples = [train_set.samples[k] for k in keep.tolist()]
        val_samples = [train_set.samples[k] for k in held.tolist()]
    else:
        val_set = _find_folder(root, "val")
        unknown = sorted(set(val_set.classes) - set(train_set.classes))
        if unknown:
            raise UserError(f"{os.path.join(root, 'val')} holds class sub-folders that {os.path.join(root, 'train')} "
                            f"has not ({', '.join(unknown[:5])}): nothing trained could score their images")
        # ImageFolder numbers each split's classes by its own sub-folders: val/'s labels are renumbered by train/'s
        # names, so that a val/ without some class still gives every image its own class's label
        train_samples = train_set.samples
        val_samples = [(path, train_set.class_to_idx[val_set.classes[y]]) for path, y in val_set.samples]
    # ImageNet-sized images (ImageNet itself, Places205 in Table 3) get ImageNet's evaluation preprocessing,
    # Resize(256) + CenterCrop(224), the same 8/7 ratio at other sizes; smaller ones are resized to the crop.
    resize = round(size * 256 / 224) if stem_for_size(size) == "imagenet" else size
    splits = []
    for samples, name in ((train_samples, "train"), (val_samples, "held-out")):
        ds = ViewFolder(samples, spec, resize, seed=args.seed)
        paths, labels = [p for p, _ in samples], torch.tensor([y for _, y in samples], dtype=torch.long)
        source = _decode_all(ds, args.workers, name, device) if args.in_memory else ds
        splits.append(Split(source, labels, spec, device, args.seed, paths))
    return splits[0], splits[1]


def _torchvision_dataset(name, root, part):
    """uint8 (N, 3, H, W) images and labels of CIFAR-10 (part train = pretrain: 50,000; test: 10,000) or
    STL-10 (pretrain: unlabeled + train, 105,000, in that order; train: 5,000; test: 8,000). Under torchrun,
    one rank per node downloads and verifies the archive while the node's other ranks wait, then read it."""
    with local_rank_zero_first():
        return _read_torchvision_dataset(name, root, part)


def _read_torchvision_dataset(name, root, part):
    if name == "cifar10":
        ds = _download(torchvision.datasets.CIFAR10, name, root, train=part != "test")
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    splits = {"pretrain": ("unlabeled", "train"), "train": ("train",), "test": ("test",)}[part]
    parts = [_download(torchvision.datasets.STL10, name, root, split=s) for s in splits]
    return (torch.from_numpy(np.concatenate([p.data for p in parts])),
            torch.from_numpy(np.concatenate([p.labels for p in parts])).long())


# MNIST (the IWAE's and the adversarial autoencoder's own data): its training set as IDX files, split as many papers
# split it, the first 50,000 images train and the last 10,000 val; the test set is not read.
MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "val": ("val-images-idx3-ubyte", "val-labels-idx1-ubyte")}
MNIST_TRAIN = 50000
IDX_MAGIC = {3: 2051, 1: 2049}  # images (N, rows, cols) and labels (N,): 0x0803 and 0x0801, big-endian


def read_idx(path, dims):
    """The uint8 array of an IDX file of `dims` dimensions (3: images, 1: labels), its header checked against
    its size: a wrong magic number, a truncated or overlong file is one sentence naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    head = 4 + 4 * dims
    if len(raw) < head:
        raise UserError(f"{path} is {len(raw)} bytes, shorter than an IDX header: the file is truncated")
    magic, *shape = (int.from_bytes(raw[k:k + 4], "big") for k in range(0, head, 4))
    if magic != IDX_MAGIC[dims]:
        raise UserError(f"{path} starts with magic number {magic}, not {IDX_MAGIC[dims]} (an IDX file of "
                        f"{'images' if dims == 3 else 'labels'}): is it the right file, and unpacked (not .gz)?")
    if len(raw) != head + int(np.prod(shape)):
        raise UserError(f"{path} holds {len(raw) - head} bytes of data where its header promises "
                        f"{' x '.join(map(str, shape))} = {int(np.prod(shape))}: the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def read_mnist(root, split):
    """(uint8 images (N, 1, 28, 28), labels (N,)) of MNIST's `split` (train or val) at root: the IDX files of
    MNIST_FILES when root holds them; otherwise torchvision's MNIST training set, downloaded into root if absent,
    split into its first MNIST_TRAIN images (train) and the rest (val)."""
    images_file, labels_file = (os.path.join(root, f) for f in MNIST_FILES[split])
    if not any(os.path.exists(os.path.join(root, f)) for pair in MNIST_FILES.values() for f in pair):
        ds = _download(torchvision.datasets.MNIST, "mnist", root, train=True)
        part = slice(0, MNIST_TRAIN) if split == "train" else slice(MNIST_TRAIN, None)
        return ds.data[part].unsqueeze(1).contiguous(), ds.targets[part].long()
    for path in (images_file, labels_file):
        if not os.path.exists(path):
            raise UserError(f"{root} holds MNIST's IDX files but not {os.path.basename(path)}: it needs "
                            + ", ".join(f for pair in MNIST_FILES.values() for f in pair))
    images, labels = read_idx(images_file, 3), read_idx(labels_file, 1)
    if len(images) != len(labels):
        raise UserError(f"{images_file} holds {len(images)} images but {labels_file} {len(labels)} labels: "
                        "the two files are not a pair")
    if images.shape[1:] != (28, 28):
        raise UserError(f"{images_file} holds images of {images.shape[1]} x {images.shape[2]} pixels, not MNIST's 28 x 28")
    if labels.max(initial=0) > 9:
        raise UserError(f"{labels_file} holds label {labels.max()}, outside MNIST's digits 0-9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _download(dataset, name, root, **kw):
    """torchvision's `dataset` under root, downloaded and verified there when it is not."""
    try:
        return dataset(root, download=True, **kw)
    except Exception as e:  # no network, a partial download, a corrupt archive: all end the same way
        raise UserError(f"{name} is not under --data_path {root} and could not be downloaded there ({e})") from None


# cifar10-mini, the small and quick profiles' data: the first MINI_PER_BATCH images of each of CIFAR-10's five
# training batches, in order (5,085 images), of which the last MINI_VAL are val/ and the others train/.
MINI_PER_BATCH, MINI_VAL = 1017, 1000


def build_cifar10_mini(cifar_root, out):
    """Writes cifar10-mini at out (an ImageFolder tree: out/{train,val}/CLASS/INDEX.png, INDEX the image's
    place in its split, five digits) from CIFAR-10's training batches under cifar_root, which torchvision
    downloads there when they are absent. A tree already at out is kept. The tree is written aside and
    renamed, so that an interrupted build leaves nothing half made at out. Returns out."""
    if os.path.isdir(out):
        return out
    ds = _download(torchvision.datasets.CIFAR10, "cifar10", cifar_root, train=True)
    per_batch = len(ds.data) // 5  # the five batches, concatenated in order: 10,000 images each
    take = [b * per_batch + j for b in range(5) for j in range(MINI_PER_BATCH)]
    n_train = len(take) - MINI_VAL
    return _write_tree(ds, out, [(("train", k) if k < n_train else ("val", k - n_train), i) for k, i in enumerate(take)])


SPLIT_VAL = 5000  # cifar10-split: the images of CIFAR-10's training set held out as val/


def build_cifar10_split(cifar_root, out):
    """Writes CIFAR-10's training set at out as train/ (45,000) and val/ (5,000), split as aavae.py --dataset cifar10
    splits it (_held_out: the same seeded draw), each image out/SPLIT/CLASS/INDEX.png with INDEX its place in
    CIFAR-10's training set. Its val/ is not cifar10-jpeg's (per class the images 4500-4999): the same sizes, other
    images. The test set is not read. As build_cifar10_mini: kept if there, written aside and renamed. Returns out."""
    if os.path.isdir(out):
        return out
    ds = _download(torchvision.datasets.CIFAR10, "cifar10", cifar_root, train=True)
    keep, held = _held_out(len(ds.data), SPLIT_VAL)
    place = {**{i: "train" for i in keep.tolist()}, **{i: "val" for i in held.tolist()}}
    return _write_tree(ds, out, [((place[i], i), i) for i in range(len(ds.data))])


def _write_tree(ds, out, where):
    """Writes ds's images at out as an ImageFolder tree of PNGs: where lists ((split, index), i) for each image i
    written, as out/split/CLASS/INDEX.png. Built in out.partial and renamed: an interrupted build leaves no half tree."""
    from PIL import Image
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for (split, index), i in tqdm(where, desc=f"writing {out}", leave=False):
        folder = os.path.join(tmp, split, ds.classes[ds.targets[i]])
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(ds.data[i]).save(os.path.join(folder, f"{index:05d}.png"))
    os.rename(tmp, out)
    return out


DECODES_PER_WORKER = 1000  # a folder smaller than this many images per worker is decoded with fewer workers


def _decode_all(ds, workers, name, device):
    """Every image of a ViewFolder as one uint8 tensor (N, 3, size, size) on `device`, written in place into
    memory taken once: under torchrun each rank decodes a block of the images (DataLoader workers, at most
    one per DECODES_PER_WORKER images: starting a worker costs more than decoding a few hundred small files)
    and the blocks are gathered."""
    n = len(ds)
    if n == 0:
        raise UserError(f"the {name} split has no images")
    rank, world = rank_world()
    out = torch.empty(padded(n, world), 3, ds.size, ds.size, dtype=torch.uint8, device=device)
    mine = range(*block(n, rank, world))
    keys = [[(0, 0, i) for i in mine[k:k + 256]] for k in range(0, len(mine), 256)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=keys, num_workers=min(workers, len(mine) // DECODES_PER_WORKER),
                                         pin_memory=device.type == "cuda")
    at = mine.start
    for batch in tqdm(loader, desc=f"decoding {name} images", leave=False, disable=not is_main() or None):
        images = _check_batch(batch)[0]
        out[at:at + len(images)].copy_(images, non_blocking=True)
        at += len(images)
    return gather_blocks(out, rank, world)[:n]
