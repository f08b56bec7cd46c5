"""ControlNet conditioning: which ControlNet to load, and the control image it needs.

canny is computed here with OpenCV from any picture. pose and depth take a ready map with
``--control-is-map``; otherwise a detector runs: controlnet_aux's OpenPose (an optional package) or
transformers' depth-estimation pipeline, both of which download their weights on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sid.errors import BadInput, ModelNotFound
from sid.families import family_of_pipeline
from sid.pipelines import ModelSpec, component_spec, load_from_candidates, quiet_libraries

DEPTH_MODEL = "Intel/dpt-hybrid-midas"
POSE_ANNOTATORS = "lllyasviel/Annotators"
# the modes of FLUX's union ControlNets (InstantX/Shakker-Labs Union, Union-Pro), by control type
UNION_MODES = {"canny": 0, "depth": 2, "pose": 4}


def controlnet_source(spec: ModelSpec, pipe: Any, control_type: str, controlnet: str | None) -> str:
    """--controlnet, else the preset's default for this control type (its family's, or the config's)."""
    if controlnet:
        return controlnet
    if spec.preset is None or control_type not in spec.preset.controlnets:
        raise BadInput(
            f"no default {control_type} ControlNet for model {spec.label!r} "
            f"({family_of_pipeline(pipe).label})",
            "pass --controlnet HUB_ID_OR_FOLDER",
        )
    return spec.preset.controlnets[control_type]


def with_controlnet(pipe: Any, spec: ModelSpec, control_type: str, controlnet: str | None) -> Any:
    """The same components wrapped in the matching ControlNet pipeline (no reload)."""
    import diffusers

    from sid.adapters import adapter_for

    family = adapter_for(pipe)  # its ControlNet model and pipeline classes
    if family.controlnet_pipeline is None:
        raise BadInput(
            f"--control is not available for {family_of_pipeline(pipe).label} models", "drop --control"
        )
    source = controlnet_source(spec, pipe, control_type, controlnet)
    model_class = getattr(diffusers, family.controlnet_model)
    dtype = getattr(pipe, family.denoiser_name).dtype
    try:
        model = load_from_candidates(component_spec(source), model_class, dtype=dtype)
    except ModelNotFound as e:
        raise ModelNotFound(
            e.message, "pass --controlnet with a local ControlNet folder, or go online once"
        ) from e
    denoiser = getattr(pipe, family.denoiser_name)
    check_family(model, denoiser, pipe, source)
    cls = getattr(diffusers, family.controlnet_pipeline)
    wrapped = cls.from_pipe(pipe, controlnet=model.to(pipe.device))
    wrapped.set_progress_bar_config(disable=True)  # from_pipe starts a new config: sid draws its own bars
    return wrapped


# what a ControlNet shares with the denoiser it steers: the text width it attends to and SDXL's extra
# embeddings (UNets), the joint and pooled widths (FLUX's transformer)
CONDITIONING_KEYS = (
    "cross_attention_dim",
    "addition_embed_type",
    "joint_attention_dim",
    "pooled_projection_dim",
)


def check_family(controlnet: Any, denoiser: Any, pipe: Any, source: str) -> None:
    """BadInput unless ``controlnet`` conditions like the model's denoiser: another family's ControlNet
    would fail mid-render on a matrix shape."""
    theirs, ours = (
        {k: getattr(m.config, k, None) for k in CONDITIONING_KEYS} for m in (controlnet, denoiser)
    )
    if theirs != ours:
        width = "cross_attention_dim" if ours["cross_attention_dim"] is not None else "joint_attention_dim"
        raise BadInput(
            f"ControlNet {source!r} is for another model family than {family_of_pipeline(pipe).label} "
            f"(it attends to {theirs[width]}-wide text, the model to {ours[width]}-wide)",
            "pass --controlnet with a ControlNet made for this model's family",
        )


def control_inputs(pipe: Any, image: Any, scale: float, control_type: str) -> dict[str, Any]:
    """The ControlNet pipeline's call arguments for a control image (under the name its family's
    pipeline takes it), plus the mode of a union ControlNet (one with ``num_mode`` in its config)."""
    from sid.adapters import adapter_for

    extra = {adapter_for(pipe).control_image_arg: image, "controlnet_conditioning_scale": scale}
    if getattr(pipe.controlnet.config, "num_mode", None):
        extra["control_mode"] = UNION_MODES[control_type]
    return extra


def make_control_image(path: Path, control_type: str, is_map: bool, size: tuple[int, int] | None) -> Any:
    """An RGB PIL image to condition on."""
    from sid.photos import load_photo

    image = load_photo(path)
    if size is not None:
        image = image.resize(size)
    if control_type == "canny":
        return canny(image)
    if is_map:
        return image
    if control_type == "pose":
        return _openpose(image)
    if control_type == "depth":
        return _depth(image)
    raise BadInput(f"unknown control type {control_type!r}", "use canny, pose or depth")


def canny(image: Any, low: int = 100, high: int = 200) -> Any:
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def _openpose(image: Any) -> Any:
    try:
        from controlnet_aux import OpenposeDetector
    except ImportError as e:
        raise BadInput(
            "detecting a pose needs the optional package controlnet_aux",
            "pip install controlnet_aux, or pass a ready pose skeleton with --control-is-map",
        ) from e
    quiet_libraries()  # as every loader: no loading chatter, download bars unless the command is quiet
    try:
        detector = OpenposeDetector.from_pretrained(POSE_ANNOTATORS)
    except Exception as e:
        raise ModelNotFound(
            f"could not load the OpenPose detector {POSE_ANNOTATORS}",
            "go online once, or pass a pose map with --control-is-map",
        ) from e
    return detector(image).resize(image.size)


def _depth(image: Any) -> Any:
    from PIL import Image
    from transformers import pipeline

    try:
        estimator = pipeline("depth-estimation", model=DEPTH_MODEL)
    except Exception as e:
        raise ModelNotFound(
            f"could not load the depth model {DEPTH_MODEL}",
            "go online once, or pass a depth map with --control-is-map",
        ) from e
    depth = estimator(image)["depth"].convert("L").resize(image.size)
    return Image.merge("RGB", (depth, depth, depth))
