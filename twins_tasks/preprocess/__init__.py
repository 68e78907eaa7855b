"""The preprocess step: ImageNet val folder -> one raw float32 ``<stem>.bin`` per image (``Twins_preprocess.py``).

The transform is the recipe's torchvision pipeline, ``Resize(256, BICUBIC) -> CenterCrop(224) -> ToTensor()
-> Normalize(mean, std)`` on ``PIL.Image.open(f).convert("RGB")``, re-done with PIL + numpy so that
torchvision is not needed at run time; the bins equal torchvision's bit for bit (tests compare).

Besides the bins, ``bin_path`` gets ``manifest.csv`` (stem, source, label, wnid, status, reason) and
``classes.txt`` (the class folders present, sorted, one per line), written at the end of a complete run only: the
postprocess reads labels from the manifest, so a failed run leaves none behind.

One module per concern, imported directly (this file re-exports nothing, so that reading a manifest does not
import the image stack):

- :mod:`.transform`: the transform of one image (PIL + numpy).
- :mod:`.dataset`: checking and listing an ImageFolder-layout val folder (which images, which labels).
- :mod:`.sources`: what the images hold: a content hash per image behind a stat cache, the dataset's digest.
- :mod:`.manifest`: the manifest and classes files written beside the bins, and their one reader.
- :mod:`.workers`: the process pool that transforms images into bins.
- :mod:`.bins`: the step itself, :func:`.bins.preprocess` (bins, content stamps, manifest, classes).
- :mod:`.inputs`: the cached entry the DAG and ``twins run`` use, :func:`.inputs.prepare_inputs`.

The subcommands ``twins preprocess`` and ``twins prepare-inputs`` live in :mod:`twins_tasks.cli.preprocess`.
"""
