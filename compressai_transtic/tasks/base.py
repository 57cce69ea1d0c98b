"""The :class:`Task` interface: a machine task's network, loss, protocol and metric."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..download import FileToFetch
from ..losses import CRITERIONS  # importing the losses registers the criteria
from ..protocol import CodingProtocol
from ..strenum import StrEnum
from .detectron2_backend import require_detectron2
from .features import FrozenFeatureExtractor
from .weights import DEFAULT_WEIGHTS, TaskWeightsUnavailableError, WeightsOption, is_random, normalize_weights_option

__all__ = ["DatasetKind", "Task"]

logger = logging.getLogger(__name__)


class DatasetKind(StrEnum):
    """What a task evaluates on: how the evaluator reads ``--dataset``."""

    #: labelled images: an ImageFolder tree or a ``--labels`` list
    CLASSIFICATION = "classification"
    #: a COCO annotation file (``--annotations``) and its images
    COCO = "coco"
    #: a plain folder of images, without labels
    IMAGES = "images"


class Task:
    """A machine task: recognition network, perceptual loss, test protocol and metric.

    Tasks are plugins: the entry-point group ``compressai_transtic.tasks`` maps a name
    to a :class:`Task` subclass and :func:`compressai_transtic.tasks.get_task` builds one.
    A subclass sets the class attributes below and implements :meth:`build_network`,
    :meth:`feature_extractor`, :meth:`predict` and :meth:`compute_metrics`.

    Class attributes:
        name: the registry name (``cls``, ``det``, ``seg``).
        title: one line for humans.
        metric_names: what :meth:`compute_metrics` reports.
        metric_units: unit of each metric (default ``"%"``).
        primary_metric: the metric of the paper's rate-accuracy curves.
        default_lambdas: quality (1..4) -> the paper's trade-off weight for the loss.
        training_defaults: ``patch_size``, ``batch_size``, ``epochs``, ``lr``, ``crop``
            (``"center"``: Resize + CenterCrop; ``"random"``: RandomCrop + horizontal flip)
            and further settings of the authors' configuration.
        backends: supported backends (``"torchvision"``, ``"detectron2"``).
        dataset_kind: a :class:`DatasetKind` (or its value): how the evaluator reads
            its dataset.
        criterion_name: the ``compressai.registry`` name of the task's loss.
        trainable: whether prompts can be trained for it (it has a perceptual loss).
        has_reference: whether uncompressed images give a meaningful reference value
            (an accuracy; not for a fidelity measure).
        has_network: whether predictions come from a network (:attr:`network`), which
            the evaluator loads before any work so that missing weights stop it early.

    Args:
        weights: the network's weights: ``"default"`` (torchvision's standard file from
            the torch hub cache, downloaded if missing), a path to a state-dict file, or
            ``"random"`` / ``None`` for random initialisation without any download
            (tests, offline demos; results are meaningless).
        backend: ``"torchvision"`` (default) or ``"detectron2"``.
        device: where the network is built.
        progress: show download progress (stderr).
        seed: seed of the random initialisation (``weights="random"``), so that two
            runs build the same random network.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    metric_names: ClassVar[Tuple[str, ...]] = ()
    metric_units: ClassVar[Dict[str, str]] = {}
    primary_metric: ClassVar[str] = ""
    default_lambdas: ClassVar[Dict[int, float]] = {}
    training_defaults: ClassVar[Dict[str, Any]] = {}
    backends: ClassVar[Tuple[str, ...]] = ("torchvision",)
    dataset_kind: ClassVar[Union[DatasetKind, str]] = ""
    criterion_name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    has_reference: ClassVar[bool] = True
    has_network: ClassVar[bool] = True

    def __init__(
        self,
        weights: WeightsOption = "default",
        backend: str = "torchvision",
        device: Union[str, torch.device] = "cpu",
        progress: bool = True,
        seed: int = 0,
    ) -> None:
        if backend not in self.backends:
            raise ValueError(f"task {self.name!r} supports the backends {', '.join(self.backends)}, not {backend!r}")
        self.weights = normalize_weights_option(weights)
        self.backend = backend
        self.device = torch.device(device)
        self.progress = progress
        self.seed = int(seed)
        self._network: Optional[nn.Module] = None
        if backend == "detectron2":
            require_detectron2()

    # ------------------------------------------------------------------ network
    @property
    def random_weights(self) -> bool:
        """Whether the network is randomly initialised (results are meaningless)."""
        return is_random(self.weights)

    def describe_weights(self) -> str:
        """Where the network's weights come from, for result descriptions."""
        if self.random_weights:
            return "RANDOM WEIGHTS"
        if self.weights == DEFAULT_WEIGHTS:
            return f"{self.backend} default weights"
        return str(self.weights)

    def build_network(self, weights: WeightsOption = None, device: Union[str, torch.device, None] = None) -> nn.Module:
        """Build the recognition network, frozen and in eval mode.

        Args:
            weights: as the constructor's ``weights``; ``None`` here means "the task's
                own setting" (use ``"random"`` for random initialisation).
            device: where to build it (default: the task's device).
        """
        option = self.weights if weights is None else normalize_weights_option(weights)
        target = self.device if device is None else torch.device(device)
        if is_random(option):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = self._build(option)
        else:
            net = self._build(option)
        for p in net.parameters():
            p.requires_grad_(False)
        return net.to(target).eval()

    def _build(self, weights: Union[str, Any]) -> nn.Module:
        raise NotImplementedError

    @property
    def network(self) -> nn.Module:
        """The task's network (built on first use, then cached)."""
        if self._network is None:
            self._network = self.build_network()
        return self._network

    def prepare_network(self) -> List[FileToFetch]:
        """Load the network now (tasks that have one); returns its weights file when
        that is neither cached nor downloadable (else nothing), for the one error of a
        command that names every missing file. The network is built with the CPU random
        stream forked: the caller's stream is left as if it had not been built.
        """
        if not self.has_network:
            return []
        try:
            with torch.random.fork_rng(devices=[]):
                _ = self.network
        except TaskWeightsUnavailableError as err:
            return [err.to_fetch()]
        return []

    def feature_extractor(self, network: Optional[nn.Module] = None) -> FrozenFeatureExtractor:
        """The frozen feature extractor of the perceptual loss.

        Args:
            network: a network from :meth:`build_network` (default: :attr:`network`).
        """
        raise NotImplementedError

    @torch.no_grad()
    def saliency(self, x: Tensor) -> Tensor:
        """Where the network looks: ``(B, 1, H, W)`` maps in [0, 1] for images ``x``.

        The mean squared activation of the finest feature map of the perceptual loss
        (ResNet50's ``layer1``, the detectors' P2), upsampled to the image (bilinear)
        and divided by its maximum per image: a quality map for ROI coding.
        """
        features = self.feature_extractor()
        finest = next(iter(features(x.to(self.device).float()).values()))
        energy = F.interpolate(finest.pow(2).mean(1, keepdim=True), size=x.shape[-2:], mode="bilinear")
        peak = energy.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (energy / peak).clamp(0, 1)

    # ------------------------------------------------------------------ loss
    @classmethod
    def default_lambda(cls, quality: int) -> float:
        """The paper's trade-off weight for a quality level (1..4), from ``default_lambdas``.

        Raises:
            ValueError: the task has no default for ``quality``.
        """
        lambdas = cls.default_lambdas or {}
        if quality not in lambdas:
            raise ValueError(f"task {cls.name!r} has default lambdas for qualities {sorted(lambdas)}, not {quality}")
        return float(lambdas[quality])

    def lmbda(self, quality: int) -> float:
        """This task's trade-off weight for a quality level (default: :meth:`default_lambda`)."""
        return self.default_lambda(quality)

    def criterion(self, lmbda: Optional[float] = None, quality: Optional[int] = None) -> nn.Module:
        """The task's perceptual rate-distortion loss.

        ``forward(output, x)`` takes the codec's forward dict and the input in [0, 1]
        and returns ``loss``, ``bpp_loss``, ``task_loss`` (and ``mse_loss``, detached).

        Args:
            lmbda: trade-off weight; default: the paper's value for ``quality``.
            quality: quality level (1..4) whose default lambda to use.
        """
        if lmbda is None:
            if quality is None:
                raise ValueError(
                    f"the {self.name} criterion needs lmbda or quality (the paper's lambdas: {self.default_lambdas})"
                )
            try:
                lmbda = self.lmbda(quality)
            except ValueError as exc:
                raise ValueError(f"{exc}; pass lmbda explicitly") from None
        return CRITERIONS[self.criterion_name](lmbda=lmbda, features=self.feature_extractor())

    # ------------------------------------------------------------------ evaluation
    def protocol(self) -> CodingProtocol:
        """How a dataset image is prepared and coded for this task (the paper's protocol)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: Tensor, image: Any) -> Any:
        """Run the network on one prepared or decoded image.

        Args:
            x: (1, 3, H, W) in [0, 1], the image after :meth:`protocol` preparation (or its
                decoded version).
            image: the dataset item (original size, id).

        Returns:
            A JSON-serialisable prediction (stored per image in the evaluation records).
        """
        raise NotImplementedError

    def predict_batch(self, x: Tensor, images: Sequence[Any]) -> List[Any]:
        """:meth:`predict` for a batch of equal-size images (N, 3, H, W), one prediction
        per image. Tasks whose network takes batches override it; by default the images
        go one at a time."""
        return [self.predict(x[i : i + 1], image) for i, image in enumerate(images)]

    def predict_from_features(self, res2: Tensor, size: Sequence[int], images: Sequence[Any]) -> List[Any]:
        """Predictions from a channel-selection codec's features instead of images.

        Args:
            res2: ``(B, C, ceil(H / 4), ceil(W / 4))``: the network's features after its
                first stage (ResNet's ``layer1``) for prepared images of ``size`` (H, W).
            size: the prepared images' (height, width).
            images: the dataset items.

        Raises:
            ValueError: the task's network has no such entry point.
        """
        raise ValueError(f"task {self.name!r} cannot predict from channel-selection features")

    def prediction_problem(self, prediction: Any) -> Optional[str]:
        """What is wrong with a prediction read back from the evaluation records (a
        damaged or edited file), or ``None`` when :meth:`compute_metrics` can use it.
        The evaluator sets a record with a problem aside and predicts again. Tasks that
        do not override it accept every prediction."""
        return None

    def compute_metrics(self, predictions: Mapping[Any, Any], dataset: Sequence[Any]) -> Dict[str, float]:
        """Task metrics (percentages) of per-image predictions over ``dataset`` items.

        Args:
            predictions: image id -> what :meth:`predict` returned.
            dataset: the items the predictions belong to (labels, COCO ground truth).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.describe_weights()!r}, backend={self.backend!r})"
