"""Typed configs of the commands whose options need no model code: analyze, check, curves, extract,
labels, merge, serve and visualize.

One dataclass per command, stored in Hydra's ConfigStore as ``<verb>_schema`` and named first in
``conf/<verb>.yaml``'s defaults list, as :mod:`segvn.inference.options` does for predict, evaluate
and export: each default is written here once (the YAML only composes the groups), a value outside a
:class:`~segvn.utils.schema.Choice` fails when the config is composed, and a number outside its
:func:`~segvn.utils.schema.bounded` range fails in :func:`~segvn.utils.schema.check_bounds` before any
work. Registered on import of :mod:`segvn.utils` (every command and test composes after it), so they
live below the layers whose code the commands run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from segvn.utils.schema import Choice, OnError, Split, VideoConfig, bounded

ALL_SPLITS = [Split.train, Split.val, Split.test, Split.predict]


def _splits() -> list[Split]:
    return list(ALL_SPLITS)


# ------------------------------------------------------------------------------------------ analyze
@dataclass
class GridOptions:
    """The grid of labelled frames drawn per split."""

    frames: int = bounded(8, ge=0)  # frames per split, spread evenly over it (0: no grid)
    ncols: int = bounded(4, ge=1)
    alpha: float = bounded(0.4, ge=0.0, le=1.0)  # overlay transparency (MATLAB labeloverlay)


@dataclass
class AnalyzeConfig:
    """``conf/analyze.yaml``: class statistics, charts and frame grids of a dataset."""

    splits: list[Split] = field(default_factory=_splits)  # the splits to look at; empty ones are skipped
    grid: GridOptions = field(default_factory=GridOptions)
    task_name: str = "analyze"
    tags: list[str] = field(default_factory=lambda: ["analyze"])
    data: Any = None
    paths: Any = None


# -------------------------------------------------------------------------------------------- check
class CheckLevel(Choice):
    """full: decode every frame and label; cheap: what training's set-up runs."""

    cheap = "cheap"
    full = "full"


@dataclass
class CheckConfig:
    """``conf/check.yaml``: validate a dataset (errors vs warnings: :mod:`segvn.data.check`)."""

    level: CheckLevel = CheckLevel.full
    splits: list[Split] = field(default_factory=_splits)  # the splits to check
    limit: int = bounded(50, ge=0)  # findings shown in the table (all are in check.json)
    width: int = bounded(160, ge=1)  # console width of the table
    task_name: str = "check"
    tags: list[str] = field(default_factory=lambda: ["check"])
    data: Any = None
    paths: Any = None


# ------------------------------------------------------------------------------------------- curves
@dataclass
class CurvesConfig:
    """``conf/curves.yaml``: training_progress.png of a run from its CSV log."""

    run_dir: str = MISSING
    out: str | None = None  # default: ${run_dir}/training_progress.png
    per_class: bool = False  # true also draws every val/iou/<class> curve
    smoothing: float = bounded(0.6, ge=0.0, lt=1.0)  # exponential smoothing of the per-step curves (0: raw)
    title: str | None = None  # default: "Training progress (<run dir name>)"
    task_name: str = "curves"
    paths: Any = None


# ------------------------------------------------------------------------------------------ extract
class ImageFormat(Choice):
    png = "png"
    jpg = "jpg"


@dataclass
class ExtractConfig:
    """``conf/extract.yaml``: frames of street videos into ``OUT/<street>/frames``."""

    input: str = MISSING  # a video file, or a folder whose videos (sorted by name) all belong to `street`
    street: str = MISSING  # street folder name under `out`
    out: str = "${paths.data_dir}/vietnam"  # data root; the default is where data=vietnam looks
    # frame selection, per video: set exactly one
    num_frames: int | None = bounded(None, ge=1)
    every_n: int | None = bounded(None, ge=1)
    fps: float | None = bounded(None, gt=0.0)
    image_format: ImageFormat = ImageFormat.png
    # a video that cannot be read: skip (recorded in manifest.status.json; the others are extracted; exit 1
    # at the end naming the failures) | stop (at the first failure)
    on_error: OnError = OnError.skip
    video: VideoConfig = field(default_factory=VideoConfig)
    task_name: str = "extract"
    paths: Any = None


# ------------------------------------------------------------------------------------------- labels
LabelAction = Choice("LabelAction", [(a, a) for a in ("import", "export", "prelabel", "next")])  # type: ignore[misc]
"""What ``segvn.labels`` does (also given as the first word: ``python -m segvn.labels import ...``).
A new action is one more member here, its entry in :data:`LABEL_ACTION_NEEDS`, and its branch in
:func:`segvn.labels.run`."""

LABEL_ACTION_NEEDS: dict[str, tuple[str, ...]] = {
    "import": ("format", "street", "src"),
    "export": ("format", "street", "out"),
    "prelabel": ("format", "street", "ckpt_path"),
    "next": ("street", "ckpt_path"),
}
"""The settings each action cannot go without."""

LabelFormat = Choice(  # type: ignore[misc]
    "LabelFormat", [(f, f) for f in ("cvat", "labelstudio", "cityscapes", "matlab", "palette")]
)
"""Every labelling tool format of any action; which action takes which is checked where it runs
(``segvn.data.labelformats.IMPORT_FORMATS`` / ``EXPORT_FORMATS``, ``segvn.inference.prelabel``)."""


@dataclass
class LabelsConfig:
    """``conf/labels.yaml``: import labels from labelling tools, export them, or pre-label frames."""

    action: LabelAction = MISSING  # type: ignore[valid-type]
    format: LabelFormat = MISSING  # type: ignore[valid-type]
    src: str | None = None  # import: the tool's export, a zip or a folder
    # import: the street folder name under `out`; export/prelabel: the street folder itself (DATA_ROOT/<street>)
    street: str = MISSING
    # import: the data root (default: default_data_root); export: the folder (or CVAT .zip) to write;
    # prelabel: where the pre-labels go (default: the run dir's prelabels/)
    out: str | None = None
    default_data_root: str = "${paths.data_dir}/vietnam"  # where data=vietnam looks
    # tool label name -> our class (or `ignore`), case-insensitive, e.g. mapping={rider: person, pole: ignore};
    # added to the defaults (pedestrian/people: person, tree/trees: vegetation, pavement: sidewalk,
    # cars/vehicle: car, buildings: building)
    mapping: Any = None
    overwrite: bool = False  # replace labels already in labels/
    # matlab: class names in value order (1 = first); null = classes.txt in the export, else our 8 classes
    classes: list[str] | None = None
    # labelstudio: task list (Label Studio JSON export, {"id": "image"} JSON, or id,image CSV); null = the
    # only .json/.csv in the export, else one folder per frame stem
    tasks: str | None = None
    frames_dir: str = "frames"
    labels_dir: str = "labels"
    # prelabel: the checkpoint, where it runs, its input size ([h, w]; null = the training image_size),
    # frames per batch, and whether frames that already have a label are pre-labelled too
    ckpt_path: str | None = None
    device: str = "auto"
    image_size: Any = None
    batch_size: int = bounded(4, ge=1)
    all_frames: bool = False
    # prelabel also writes uncertainty.csv: per frame the mean top-1 minus top-2 probability margin, and
    # the `label_first` most uncertain frames, spread over the video, ranked to label first
    label_first: int = bounded(20, ge=0)
    # next: propose the n unlabelled frames of the street to label next, most uncertain first, no two within
    # min_gap frames of each other (street frame order; 0 or 1: any two), none a near-duplicate of another or
    # of a labelled frame (min_distance: mean absolute grey difference of 16x12 thumbnails, 0..1; 0: off);
    # writes next_frames.csv (rank, frame, file, uncertainty, margin) and next_frames.txt into out (default:
    # the run dir)
    n: int = bounded(20, ge=1)
    min_gap: int = bounded(3, ge=0)
    min_distance: float = bounded(0.02, ge=0)
    task_name: str = "labels"
    paths: Any = None


# -------------------------------------------------------------------------------------------- merge
@dataclass
class MergeConfig:
    """``conf/merge.yaml``: one summary over the shards of a segvn.predict multirun."""

    sweep_dir: str = MISSING
    task_name: str = "merge"
    paths: Any = None


# ---------------------------------------------------------------------------------------- visualize
@dataclass
class FilterOptions:
    scale: int = bounded(4, ge=1)  # each k x k filter drawn k*scale px wide


ActivationNorm = Choice("ActivationNorm", [(n, n) for n in ("global", "channel")])  # type: ignore[misc]
"""global: one scale for all channels | channel: each on its own."""


@dataclass
class ActivationOptions:
    max_channels: int = bounded(64, ge=1)  # channels shown per layer (the strongest by mean activation)
    normalize: ActivationNorm = ActivationNorm["global"]  # type: ignore[valid-type]
    alpha: float = bounded(0.5, ge=0.0, le=1.0)  # heat-map weight of the strongest-channel overlay


@dataclass
class ClassVisOptions:
    """Class visualisations: gradient ascent on the input, per class, over octaves."""

    enabled: bool = True
    classes: list[int] | None = None  # class indices to draw; null: all
    size: list[int] = field(default_factory=lambda: [256, 256])
    steps: int = bounded(
        30, ge=1
    )  # gradient-ascent steps per octave (8 classes x 3 octaves: minutes on a CPU)
    octaves: int = bounded(3, ge=1)
    lr: float = bounded(0.05, gt=0.0)
    jitter: int = bounded(16, ge=0)
    blur_every: int = bounded(4, ge=0)  # 0: never
    seed: int = 0


@dataclass
class VisualizeConfig:
    """``conf/visualize.yaml``: first-layer filters, activations, class visualisations, the prediction."""

    ckpt_path: str = MISSING
    image: str = MISSING
    # a layer name from the smp model's named_modules() (e.g. encoder.layer3, decoder.aspp), or a list
    # of them; null: a few spread over encoder and decoder (segvn.models.introspect.default_layers)
    layer: Any = None
    # the size the frame goes through the model at: null = the training scale (short side = the training
    # short side, rounded to the output stride, aspect kept) | native = the frame size | [H, W]
    image_size: Any = None
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    filters: FilterOptions = field(default_factory=FilterOptions)
    activations: ActivationOptions = field(default_factory=ActivationOptions)
    class_vis: ClassVisOptions = field(default_factory=ClassVisOptions)
    prediction_alpha: float = bounded(0.4, ge=0.0, le=1.0)
    task_name: str = "visualize"
    tags: list[str] = field(default_factory=lambda: ["visualize"])
    data: Any = None
    model: Any = None
    paths: Any = None


# -------------------------------------------------------------------------------------------- serve
@dataclass
class FinetuneOptions:
    """POST /webhook: on ANNOTATION_CREATED/UPDATED, train on the annotations so far in the background
    (segvn.train data=vietnam on the street ``street`` under ``workdir``/data, plus ``overrides``), one run
    at a time, then serve the run's best checkpoint."""

    enabled: bool = False
    workdir: str = "${paths.output_dir}/finetune"
    street: str = "labelstudio"
    overrides: list[str] = field(default_factory=lambda: ["+experiment=resnet18"])
    timeout_s: float = bounded(86400.0, gt=0)
    # each run's network starts from the served checkpoint (init_from=<its .ckpt>; the previous run's best
    # once one has been switched to); false: from the settings alone. Skipped for an exported model
    init_from_served: bool = True


@dataclass
class ServeConfig:
    """``conf/serve.yaml``: a Label Studio ML backend (docs/guide/labelling_loop.md)."""

    ckpt_path: str = MISSING
    # the address to listen on: loopback only by default (0.0.0.0 for every interface, with a token)
    host: str = "127.0.0.1"
    port: int = bounded(9090, ge=0, le=65535)
    # null: no authentication; else every request needs it (Label Studio: "Basic Authentication" with the
    # token as password, or an Authorization: Token <token> header)
    token: str | None = None
    # where the model runs, as for segvn.load_model (runtime: auto | torch | onnx | torchscript | openvino);
    # image_size null: the checkpoint's training scale
    device: str = "auto"
    runtime: str = "auto"
    image_size: Any = None
    batch_size: int = bounded(4, ge=1)  # frames of one request per forward pass
    # the only local folders images are read from: Label Studio's local-files document root
    # (/data/local-files/?d=PATH is read as ROOT/PATH) or plain paths under them; none by default
    roots: list[str] = field(default_factory=list)
    # Label Studio's media/upload folder, for tasks of uploaded files (/data/upload/...); null: fetched from
    # label_studio_url, or refused without it
    upload_dir: str | None = None
    # the Label Studio that sends tasks: images on its host are fetched (with label_studio_token, its API
    # token; /setup also gives it), and http(s) images only from it or from allowed_hosts ("host:port")
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    # an image over max_pixels (width x height, from its header) or max_bytes is refused (413), as is a
    # request body over max_request_bytes
    max_pixels: int = bounded(50_000_000, ge=1)
    max_bytes: int = bounded(200_000_000, ge=1)
    max_request_bytes: int = bounded(20_000_000, ge=1)
    fetch_timeout_s: float = bounded(30.0, gt=0)  # seconds to wait for an image from a host
    log_level: str = "info"
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    task_name: str = "serve"
    paths: Any = None


COMMAND_SCHEMAS: dict[str, type] = {
    "analyze": AnalyzeConfig,
    "check": CheckConfig,
    "curves": CurvesConfig,
    "extract": ExtractConfig,
    "labels": LabelsConfig,
    "merge": MergeConfig,
    "serve": ServeConfig,
    "visualize": VisualizeConfig,
}


def register_command_schemas() -> None:
    """Store ``<verb>_schema`` for each of :data:`COMMAND_SCHEMAS` in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    for verb, schema in COMMAND_SCHEMAS.items():
        cs.store(name=f"{verb}_schema", node=schema)
