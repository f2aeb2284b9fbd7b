"""The config schema: every section and key of an experiment, typed, with its default.

A config file is YAML that sets some of these keys (``wsss.config.load`` reads it: ``_base_``
files, command-line overrides, validation against this schema). One experiment, one file:

    exp_name, work_dir, seed
    data      the dataset (VOC 2012, COCO 2014 or the synthetic mini-VOC) and its splits
    model     the CAM network: registered model name, backbone, weights, output stride
    train     train_cam's schedule and loop (the IRN/GSLM recipe by default)
    runtime   device, AMP, determinism, compile, threads, logging
    cam       make_cam: multi-scale + flip inference, the CAM files
    eval_cam  eval_cam: the background-threshold sweep (and CAM+CRF)
    pseudo    make_pseudo / eval_pseudo: thresholds and the label CRF
    irn       train_irn / make_irn_labels / eval_irn: IRN's boundary network and random walk
    seg       train_seg / eval_seg: DeepLab and its evaluation
    pipeline  run_pipeline: which stages, in order
    pretrain  the synthetic configs' pretrained start (wsss.pretrain)

A method adds its own section (``ppl``, ``gslm``) through ``wsss.registry.register_section``;
it lives in ``Config.extra`` and reads as ``cfg.<name>``. Paths left empty here take their
defaults under ``work_dir`` (wsss.layout). Plain dataclasses: importing this module imports
no torch.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

# The ResNet depths every network here is built on (wsss.models.backbones.ARCHS); the one list.
Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
BACKBONES: tuple[str, ...] = typing.get_args(Backbone)


@dataclass
class AugConfig:
    """Geometric and photometric training augmentation (image and mask jointly)."""

    resize_long: list[int] = field(default_factory=lambda: [320, 640])  # [] = off
    scale_range: list[float] = field(default_factory=list)  # [lo, hi] random rescale; [] = off
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    hflip: bool = True
    color_jitter: float = 0.0  # brightness/contrast/saturation strength, 0 = off
    crop_size: int = 512  # 0 = no crop (batches then need equal-sized images)
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic mini-VOC, generated when data.root does not exist."""

    seed: int = 0
    image_size: int = 128
    num_train: int = 100  # images with SegmentationClass GT ("train", like VOC's 1,464)
    num_aug: int = 700  # extra images only in train_aug (like SBD)
    num_val: int = 100
    num_test: int = 20
    num_classes: int = 5
    write_coco: bool = False
    # non-square images ([] / false: image_size squares); see wsss.data.synthetic.image_sizes
    width_range: list[int] = field(default_factory=list)  # [lo, hi] inclusive
    height_range: list[int] = field(default_factory=list)
    voc_sizes: bool = False  # roughly VOC 2012's sizes: long side 500, mostly 500x375
    # the scene design (docs/synthetic_bench.md): round bodies with the part anywhere inside, or
    # elongated bodies with the part at one end; parts in two palette colours or one hue in two shades
    scene: Literal["round", "elongated"] = "round"
    part_colours: Literal["pairs", "one_hue"] = "pairs"
    # objects of no class (background in the GT): 0 to this many per image, their parts in
    # hues between the classes' (one_hue only); without them an object whose part the
    # network does not know already names the one class left
    decoys: int = 0
    # the graded bench's knob (docs/synthetic_bench.md): the probability that a class object's
    # body is of the shared striped family (every decoy's, every body's at 1) rather than its
    # class's own motif; 1: no class signal in the bodies, the scenes drawn before it existed
    shared_body: float = 1.0
    # > 1: every image drawn at this many times the size and box-filtered down, as a larger
    # image looks shrunk (less pixel noise, anti-aliased edges): the graded bench's CRF rule
    supersample: int = 1


@dataclass
class DataConfig:
    root: str = MISSING  # required: the VOC2012-style folder (JPEGImages, SegmentationClass, ...)
    dataset: Literal["voc12", "coco14", "synthetic"] = "voc12"
    num_classes: int = 20
    label_file: str = ""  # default: <root>/cls_labels.json
    train_split: str = "train_aug"
    gt_dir: str = "SegmentationClass"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    name: str = "cam_net"  # a registered CAM model (see wsss.registry)
    backbone: Backbone = "resnet50"
    weights: str = "IMAGENET1K_V1"  # torchvision weights name, a local file, or "none"
    output_stride: Literal[8, 16, 32] = 16
    # "stride": remove strides without dilation (the IRN/GSLM CAM network);
    # "dilation": torchvision's replace_stride_with_dilation (a different network).
    stride_mode: Literal["stride", "dilation"] = "stride"
    frozen_bn: bool = True  # BN always in eval mode; affine parameters still train
    freeze_stem: bool = True  # conv1/bn1 fully frozen
    detach_stage: int = 2  # no gradient into stages 1..detach_stage (0 = train all)


@dataclass
class ScheduleConfig:
    """One optimisation schedule (SGD, poly decay): the fields every section that trains
    shares (``train``, ``seg``, ``gslm``), declared once; a section states its own recipe's
    defaults. The engine runs it as a :class:`wsss.engine.trainer.Schedule`."""

    epochs: int = 5
    iterations: int = 0  # > 0: this many steps instead of epochs (DeepLab)
    batch_size: int = 16  # global batch, split across ranks under torchrun
    lr: float = 0.1
    head_lr_mult: float = 10.0  # the classifier's lr multiplier
    # The reference's PolyOptimizer passed weight decay into SGD's momentum
    # slot, so its published numbers were trained with momentum ~1e-4.
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 1e-4
    poly_power: float = 0.9


@dataclass
class TrainConfig(ScheduleConfig):
    """train_cam: the CAM network's schedule (the IRN/GSLM recipe by default) and its loop."""

    max_steps: int = 0  # > 0 caps the steps of every training phase (smoke runs)
    # A trained network of this config's model (e.g. another run's checkpoints/final.pth)
    # loaded whole before the first phase. With epochs: 0 it is taken as it is: a finished
    # CAM run becomes the GLM of GSLM's rounds without training it again.
    init_checkpoint: str = ""
    workers: int = -1  # -1: the node's cores over the ranks on it (wsss.parallel.workers_for)
    log_interval: int = 20
    ckpt_interval: int = 200  # steps between last.pth saves (and at each phase end)
    vis_interval: int = 200  # steps between CAM overlays in TensorBoard (0 = off)
    aug: AugConfig = field(default_factory=AugConfig)


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = False
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    # torch.compile's backend: inductor (the fast one), or e.g. aot_eager to trace and run the
    # same graphs without code generation (isolates a compiler problem; what the CPU tests use)
    compile_backend: str = "inductor"
    sync_bn: bool = True  # under DDP on CUDA, trainable BN becomes SyncBatchNorm
    # under torchrun: nccl on CUDA, gloo on the CPU (auto); gloo on CUDA tensors runs several
    # ranks on one GPU (scripts/check_gpu.py), which NCCL refuses
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"
    pin_memory: bool = True
    persistent_workers: bool = True
    threads: int = 0  # torch.set_num_threads when > 0
    tensorboard: bool = True
    progress: bool = True  # tqdm bars


@dataclass
class CamConfig:
    """make_cam: multi-scale + flip CAM inference."""

    split: str = "train_aug"
    checkpoint: str = ""  # default: <work_dir>/checkpoints/final.pth
    out_dir: str = ""  # default: <work_dir>/cams
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    flip: bool = True
    # The image at each scale. bicubic: PIL on the uint8 image, then normalise: how
    # both references (IRN, GSLM) write their CAM files. nearest: the normalised
    # tensor, sizes floored: GSLM's per-round evaluation path only.
    resize_mode: Literal["nearest", "bicubic", "bilinear"] = "bicubic"
    dtype: Literal["float16", "float32"] = "float32"
    save_strided: bool = False
    strided_stride: int = 4
    images_per_batch: int = 4  # equal-sized images are batched (exact: BN is frozen in eval)
    workers: int = -1  # -1: the node's cores over the ranks on it (wsss.parallel.workers_for)
    redo: bool = False


@dataclass
class EvalCamConfig:
    split: str = "train"
    cam_dir: str = ""  # default: cam.out_dir
    thresholds: list[float] = field(default_factory=list)  # explicit list, or the range below
    threshold_start: float = 0.05
    threshold_stop: float = 0.60  # inclusive
    threshold_step: float = 0.01
    report_threshold: float = -1.0  # also report this threshold (< 0: none)
    # Also score "CAM+CRF": the CAM at one threshold (report_threshold if set, else the
    # sweep's best) refined by the pseudo masks' label CRF (pseudo.crf_params), as the
    # GSLM reference scores each SLM round.
    crf: bool = True
    coverage_threshold: float = 0.30  # synthetic data: part/body coverage at this fixed threshold too


@dataclass
class CRFConfig:
    """A dense CRF (pydensecrf): its iterations and its two kernels, Gaussian (position) and
    bilateral (position + colour). Declared once; ``pseudo.crf_params`` (the pseudo masks'
    label CRF, GSLM's values by default) and ``seg.crf_params`` (DeepLab's probability CRF)
    are each one of these."""

    iters: int = 10
    gt_prob: float = 0.7  # label CRF: the probability given to each pixel's label (unary_from_labels)
    gauss_sxy: float = 3.0
    gauss_compat: float = 10.0  # GSLM uses 10, IRN 3
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    # > 0: the two sxy (pixel units) are for images of this long side and scale with each
    # image's (sxy * max(H, W) / reference_size; the synthetic configs: 500, VOC's, for their
    # smaller images); 0: used as given (VOC)
    reference_size: float = 0.0
    # pydensecrf (C++, one core per image) or wsss.pseudo.crf_torch (the same arithmetic in
    # PyTorch: bit for bit on the CPU, to float rounding on CUDA, batched over images);
    # auto: torch on CUDA, pydensecrf on the CPU (where the C++ is faster)
    backend: Literal["auto", "pydensecrf", "torch"] = "auto"

    def sxy_for(self, h: int, w: int) -> tuple[float, float]:
        """(Gaussian sxy, bilateral sxy) for an image of h x w pixels."""
        f = max(h, w) / self.reference_size if self.reference_size > 0 else 1.0
        return self.gauss_sxy * f, self.bilateral_sxy * f


@dataclass
class PseudoConfig:
    split: str = "train_aug"
    cam_dir: str = ""  # default: cam.out_dir
    out_dir: str = ""  # default: <work_dir>/pseudo
    fg_thres: float = 0.30
    bg_thres: float = 0.05
    crf: bool = True
    crf_params: CRFConfig = field(default_factory=CRFConfig)  # the label CRF (GSLM's)
    shared_pairwise: bool = True  # build the CRF's pairwise terms once for fg and bg
    workers: int = -1  # -1: the node's cores over the ranks on it (wsss.parallel.workers_for)
    redo: bool = False
    eval_split: str = "train"  # evaluate the masks of this split against GT ("" = skip)


# --------------------------------------------------------------------------
# DeepLab (train_seg, eval_seg)
# --------------------------------------------------------------------------
def _seg_aug() -> AugConfig:
    return AugConfig(resize_long=[], scale_range=[0.5, 1.5], interpolation="bilinear", crop_size=321)


def _seg_crf() -> CRFConfig:
    # deeplab-pytorch's probability CRF (gt_prob is the label CRF's and unused here)
    return CRFConfig(gauss_sxy=1.0, gauss_compat=3.0, bilateral_sxy=67.0, bilateral_srgb=3.0, bilateral_compat=4.0)


@dataclass
class SegConfig(ScheduleConfig):
    # the DeepLab v2 recipe's schedule (the shared ScheduleConfig fields); the head's biases
    # have their own multiplier and no weight decay
    iterations: int = 20000
    batch_size: int = 10
    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    arch: Literal["deeplabv2", "deeplabv3"] = "deeplabv2"
    backbone: Backbone = "resnet101"
    # torchvision weights name, a local file (e.g. a COCO-pretrained DeepLab init), none, or
    # from_cam: the backbone of this experiment's trained CAM network (cam.checkpoint)
    weights: str = "IMAGENET1K_V1"
    output_stride: Literal[8, 16] = 8
    frozen_bn: bool = True
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # training
    train_split: str = "train_aug"
    # the masks DeepLab trains on when seg.mask_dir is not set: the CRF pseudo masks
    # (pseudo.out_dir) or IRN's random-walk labels (<irn.out_dir>/labels)
    masks: Literal["pseudo", "irn"] = "pseudo"
    # any mask folder instead: a bare name lies under data.root (SegmentationClassAug), a
    # path is used as is
    mask_dir: str = ""
    head_bias_lr_mult: float = 20.0  # head biases (no weight decay on them)
    workers: int = -1  # -1: the node's cores over the ranks on it (wsss.parallel.workers_for)
    log_interval: int = 20
    ckpt_interval: int = 1000
    val_interval: int = 0  # > 0: val mIoU every N iterations (needs GT)
    aug: AugConfig = field(default_factory=_seg_aug)
    # evaluation
    checkpoint: str = ""  # default: <work_dir>/seg/checkpoints/final.pth
    val_split: str = "val"
    test_split: str = ""  # e.g. "test": export PNGs for the evaluation server
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])
    flip: bool = True
    crf: bool = False
    crf_params: CRFConfig = field(default_factory=_seg_crf)
    save_predictions: bool = True  # coloured PNGs of val predictions
    out_dir: str = ""  # default: <work_dir>/seg


# --------------------------------------------------------------------------
# IRN (train_irn, make_irn_labels, eval_irn)
# --------------------------------------------------------------------------
def _irn_aug() -> AugConfig:
    # the reference's VOC12AffinityDataset: random rescale 0.5-1.5 (image bicubic, mask
    # nearest), flip, random crop 512 (image 0 after normalisation, mask 255); no long-side resize
    return AugConfig(resize_long=[], scale_range=[0.5, 1.5], interpolation="bicubic", hflip=True, crop_size=512)


@dataclass
class IRNConfig(ScheduleConfig):
    """IRN's semantic half: a boundary network trained on the pseudo masks' pixel relations,
    then a random walk of the CAMs within its boundaries (wsss.irn). The reference recipe
    (IRN's run_sample.py; GSLM's step/train_irn.py, make_sem_seg_labels.py)."""

    # train_irn: 3 epochs, batch 32 (IRN; GSLM 16), lr 0.1, weight decay 1e-4, poly 0.9. The
    # reference's PolyOptimizer puts the weight decay into SGD's momentum slot (momentum
    # 1e-4); momentum: 1e-4 restores it exactly.
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.1
    head_lr_mult: float = 1.0  # the boundary branch is the only thing that trains
    momentum: float = 0.0
    weight_decay: float = 1e-4
    backbone: Backbone = "resnet50"  # frozen (eval mode, no gradient), strides 2, 2, 2, 1
    weights: str = "IMAGENET1K_V1"  # the reference's resnet50-19c8e357.pth is torchvision's V1
    radius: int = 10  # training pairs: the half disk of this radius at stride 4
    train_split: str = "train_aug"
    # the relation labels: default the pseudo masks (pseudo.out_dir; their label CRF's
    # pseudo.crf_params.gauss_compat is 10 as GSLM, 3 as IRN's own setting)
    mask_dir: str = ""
    aug: AugConfig = field(default_factory=_irn_aug)
    workers: int = -1  # -1: the node's cores over the ranks on it (wsss.parallel.workers_for)
    log_interval: int = 20
    ckpt_interval: int = 200
    # make_irn_labels (the reference's make_sem_seg_labels)
    split: str = "train_aug"  # the images that get labels (DeepLab trains on them)
    cam_dir: str = ""  # default: cam.out_dir (its strided maps: cam.save_strided)
    walk_radius: int = 5
    beta: float = 10.0  # affinity ** beta
    exp_times: int = 8  # 2 ** 8 = 256 steps of the walk
    bg_thres: float = 0.25  # the background plane (sem_seg_bg_thres)
    infer_canvas: int = 512  # images padded to this square for the boundary map (the reference's crop)
    walk: Literal["sparse", "dense"] = "sparse"  # dense: the reference's N x N squaring (tests, small images)
    # the walk's boundary map: the trained network's, or zeros (a control: the walk with no
    # boundary, every affinity 1; what the boundary network adds to the CAM's diffusion)
    boundary: Literal["learned", "zeros"] = "learned"
    eval_split: str = "train"  # eval_irn: the labels of this split against GT ("" = skip)
    checkpoint: str = ""  # default: <irn.out_dir>/checkpoints/final.pth
    out_dir: str = ""  # default: <work_dir>/irn
    redo: bool = False


# --------------------------------------------------------------------------
# run_pipeline, and the synthetic configs' pretrained start
# --------------------------------------------------------------------------
@dataclass
class PipelineConfig:
    stages: list[str] = field(default_factory=list)  # [] = every stage (wsss.stages.STAGES), in order
    visualize_ids: int = 4  # how many ids get a side-by-side visualisation PNG


@dataclass
class PretrainConfig:
    """wsss.pretrain: make ``model.weights`` by pretraining on the project's own corpus."""

    enabled: bool = False  # make model.weights by pretraining when the file is missing
    corpus_root: str = "data/pretrain_corpus"
    seed: int = 1000  # the corpus's seed; no synthetic mini-VOC config uses this stream
    image_size: int = 64
    num_train: int = 4000
    num_val: int = 400
    num_classes: int = 20
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.003  # AdamW, one-cycle schedule (15% warm-up): from random init it needs neither BN tuning nor a long warm-up
    weight_decay: float = 1e-4


# --------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------
@dataclass
class Config:
    exp_name: str = ""  # default: the config file's name
    work_dir: str = ""  # default: work_dirs/<exp_name>
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    cam: CamConfig = field(default_factory=CamConfig)
    eval_cam: EvalCamConfig = field(default_factory=EvalCamConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    irn: IRNConfig = field(default_factory=IRNConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # A method's section (ppl, gslm: wsss.registry.register_section), present when the config
    # uses the method, reads as an attribute: cfg.gslm.rounds.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(name)
