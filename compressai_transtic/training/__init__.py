"""Prompt training for any task on a frozen base codec (single process or torchrun).

Library use::

    from compressai_transtic.training import TrainConfig, train

    result = train(TrainConfig(task="det", quality=1, dataset="/data/coco/train2017",
                               val_fraction=0.002, output="runs/det-q1"))
    print(result.final_adapter, result.best_adapter)

Invalid input raises one of :data:`USER_ERRORS` before any training step, its message
naming settings as ``TrainConfig`` fields (``batch_size``); ``examples/train_prompts.py``
reports them as the command line does. Without ``output``, a run writes to
``runs/<task>-q<quality>`` (TransTIC's default prompts) or ``runs/<arch>-<task>-q<quality>``
(a baseline; ``runs/transtic-<variant>-<task>-q<quality>`` for another TransTIC variant).

Command line: ``compressai-transtic train --help`` (or ``python -m
compressai_transtic.training``; under ``torchrun`` use ``-m compressai_transtic.training``).

Outputs in the output directory: ``config.json`` (resolved settings), ``metrics.csv``
(and ``tensorboard/`` when TensorBoard is installed), ``checkpoint.pth`` (training
state, for ``--resume``), ``adapter_best.pth`` (best validation value, when a
validation set is given), ``adapter_epochNNNN.pth`` (with ``--save-every``),
``adapter_final.pth`` (load with :func:`compressai_transtic.prompts.load_adapter`) and
``model_final.pth.tar`` (the whole TransTIC as ``{"state_dict": ...}``, the layout of
the released weights: ``compressai_transtic.checkpoint.load_model(None, path)``).

Training the base codec (human perception)
------------------------------------------
The base codec is trained with CompressAI's own example script, which this package
makes aware of the ``tic`` model (registered in CompressAI's model table at start-up).
CompressAI installs that script as the top-level package ``examples``; run it from a
directory that has no ``examples/`` folder of its own (NOT from a checkout of this
repository, whose ``examples/`` would shadow it)::

    mkdir -p ~/tic-q1 && cd ~/tic-q1
    python -m examples.train -m tic -d /data/your-image-dataset --lambda 0.0018 \
        --epochs 400 --batch-size 8 --patch-size 256 256 -lr 1e-4 -n 4 --seed 42 --cuda

It writes ``checkpoint.pth.tar`` (last epoch; pass it back as ``--checkpoint`` to
continue) and ``checkpoint_best_loss.pth.tar`` into the current directory. CompressAI
builds ``tic`` at its quality 3, which has the same architecture as every quality
(N=128, M=192): the quality of the result is set by ``--lambda`` alone. ``-d`` expects
CompressAI's ``ImageFolder`` layout (``train/`` and ``test/`` sub-folders). The released
base codecs used lambda 0.0018, 0.0035, 0.0067, 0.013 (qualities 1-4; loss
``lambda * 255^2 * MSE + bpp``). The saved checkpoint is then the
``--base`` of ``compressai-transtic train``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ConfigError",
    "DatasetError",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "USER_ERRORS",
    "UnreadableImageError",
    "train",
]

_EXPORTS = {
    "ConfigError": ".config",
    "TrainConfig": ".config",
    "DatasetError": ".data",
    "UnreadableImageError": ".data",
    "ResumeError": ".state",
    "TrainResult": ".trainer",
    "Trainer": ".trainer",
    "USER_ERRORS": ".trainer",
    "train": ".trainer",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list:
    return sorted(list(globals()) + list(_EXPORTS))
