"""Tiny random-weight diffusers pipelines built from configs, for tests and CPU benchmarks.

Nothing here downloads. Pipelines are saved with ``save_pretrained`` so that tests load them back
through ``--model PATH``, the same code path users hit. The tokenizer is the real CLIP BPE
tokenizer (built from the vocabulary file that ships inside the open-clip-torch wheel), so real
names tokenize exactly as in Stable Diffusion.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CLIP_VOCAB_SIZE = 49408
SDXL_VAE_SCALING_FACTOR = 0.13025  # SDXL's VAE config; the tiny SDXL declares it too
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def find_bpe_vocab() -> Path | None:
    """The CLIP BPE vocabulary shipped by open-clip-torch or clip-anytorch, found without importing them."""
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / BPE_FILE
            if path.is_file():
                return path
    return None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=False))


def write_clip_tokenizer(folder: Path, bpe_path: Path | None = None) -> Path:
    """Write vocab.json, merges.txt and the tokenizer config of the real CLIP tokenizer to ``folder``."""
    bpe_path = bpe_path or find_bpe_vocab()
    if bpe_path is None:
        raise FileNotFoundError(f"{BPE_FILE} not found: pip install --no-deps open-clip-torch")
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : 1 + CLIP_VOCAB_SIZE - 2 * 256 - 2]  # 256 bytes, 256 word-final bytes, 2 specials
    base = list(_bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@lru_cache(maxsize=4)
def _tokenizer_template(bpe_path: str) -> Path:
    import tempfile

    return write_clip_tokenizer(Path(tempfile.mkdtemp(prefix="sid-clip-tok-")), Path(bpe_path))


def clip_tokenizer() -> Any:
    """The real CLIP tokenizer, loaded the way pipelines load it (``from_pretrained(folder)``)."""
    from transformers import CLIPTokenizer

    bpe = find_bpe_vocab()
    if bpe is None:
        raise FileNotFoundError(f"{BPE_FILE} not found: pip install --no-deps open-clip-torch")
    return CLIPTokenizer.from_pretrained(str(_tokenizer_template(str(bpe))))


def tiny_text_encoder(
    width: int = 32, seed: int = 0, with_projection: bool = False, eos_token_id: int = 49407
) -> Any:
    """A tiny CLIP text encoder; ``eos_token_id=2`` is the legacy value real SD/SDXL configs carry."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=CLIP_VOCAB_SIZE,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=49406,
        eos_token_id=eos_token_id,
        pad_token_id=49407,
        hidden_act="gelu",
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def tiny_unet(cross_attention_dim: int = 32, seed: int = 0, **extra: Any) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
        **extra,
    )


def tiny_vae(seed: int = 0, scaling_factor: float = 0.18215) -> Any:
    """A 4-level VAE, so latents are 1/8 of the image size as in Stable Diffusion; ``scaling_factor``
    is the latent scale its config declares (SD 1.x/2.x's by default)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


def tiny_scheduler(prediction_type: str = "epsilon") -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def tiny_sd_pipeline(text_width: int = 32, seed: int = 0, prediction_type: str = "epsilon") -> Any:
    """A StableDiffusionPipeline (SD1/SD2 layout) whose text encoder has ``text_width`` dims."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        unet=tiny_unet(text_width, seed),
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(text_width, seed),
        tokenizer=clip_tokenizer(),
        scheduler=tiny_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0, widths: tuple[int, int] = (32, 64)) -> Any:
    """A StableDiffusionXLPipeline with two tiny text encoders (32 and 64 dims unless ``widths`` says)."""
    from diffusers import StableDiffusionXLPipeline

    unet = tiny_unet(
        sum(widths),
        seed,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=widths[1] + 6 * 8,
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=tiny_vae(seed, scaling_factor=SDXL_VAE_SCALING_FACTOR),
        # the legacy eos_token_id 2 of SDXL's own text-encoder configs (pooling at the end token is sid's job)
        text_encoder=tiny_text_encoder(widths[0], seed, eos_token_id=2),
        text_encoder_2=tiny_text_encoder(widths[1], seed + 1, with_projection=True, eos_token_id=2),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        scheduler=tiny_scheduler(),
    )


T5_WIDTH = 48  # the tiny FLUX's T5 width (its CLIP is 32 wide, as the tiny SD's)
FLUX_VAE_SCALING_FACTOR, FLUX_VAE_SHIFT_FACTOR = (
    0.3611,
    0.1159,
)  # FLUX.1's VAE config; the tiny one declares them


@lru_cache(maxsize=1)
def _t5_tokenizer_template() -> Path:
    """A SentencePiece-style (Unigram, Metaspace) tokenizer trained here on the celebrity lists and the
    prompt templates, in T5's layout (<pad> 0, </s> 1, <unk> 2; </s> appended), saved as T5TokenizerFast."""
    import tempfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    from sid.methods import IMAGENET_TEMPLATES
    from sid.priors import PRIOR_LISTS, load_names

    names = [n for spec in PRIOR_LISTS.values() for n in load_names(spec.file)]
    prompts = [t.format(word) for t in IMAGENET_TEMPLATES for word in ("person", "face of sks person")]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(vocab_size=1000, special_tokens=specials, unk_token="<unk>")
    tok.train_from_iterator(names + prompts * 4 + ["a person as a knight in a forest"] * 8, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    t5 = T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0
    )
    folder = Path(tempfile.mkdtemp(prefix="sid-t5-tok-"))
    t5.model_max_length = 512
    t5.save_pretrained(str(folder))
    return folder


def t5_tokenizer() -> Any:
    """A small T5 tokenizer trained offline, loaded the way FluxPipeline loads its ``tokenizer_2``."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(_t5_tokenizer_template()))


def tiny_t5_encoder(width: int = T5_WIDTH, seed: int = 0) -> Any:
    """A one-layer T5EncoderModel over ``t5_tokenizer()``'s vocabulary (T5-v1.1's gated-GELU layout)."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(t5_tokenizer()),
        d_model=width,
        d_kv=8,
        d_ff=2 * width,
        num_layers=1,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def tiny_flux_transformer(
    clip_width: int = 32, t5_width: int = T5_WIDTH, seed: int = 0, guided: bool = True
) -> Any:
    """A FluxTransformer2DModel with one double and one single block, guidance-distilled as FLUX.1-dev
    (not ``guided``: no guidance input, as FLUX.1-schnell)."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_width,
        pooled_projection_dim=clip_width,
        guidance_embeds=guided,
        axes_dims_rope=(4, 6, 6),
    )


def tiny_flux_pipeline(seed: int = 0, widths: tuple[int, int] = (32, T5_WIDTH), guided: bool = True) -> Any:
    """A FluxPipeline: tiny CLIP (pooled) and T5 encoders of ``widths``, FLUX.1-dev's scheduler config
    (dynamic shift) and a 4-channel VAE with FLUX's scale and shift (not ``guided``: schnell's layout)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    vae = tiny_vae(seed, scaling_factor=FLUX_VAE_SCALING_FACTOR)
    vae.register_to_config(shift_factor=FLUX_VAE_SHIFT_FACTOR)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        # FLUX.1's CLIP-L config (openai/clip-vit-large-patch14's) carries the legacy eos_token_id 2 too
        text_encoder=tiny_text_encoder(widths[0], seed, eos_token_id=2),
        tokenizer=clip_tokenizer(),
        text_encoder_2=tiny_t5_encoder(widths[1], seed + 1),
        tokenizer_2=t5_tokenizer(),
        transformer=tiny_flux_transformer(*widths, seed, guided),
    )


def tiny_ltx_pipeline(t5_seed: int = 1, seed: int = 0) -> Any:
    """An LTXPipeline (LTX-Video) whose T5 is ``tiny_t5_encoder(seed=t5_seed)``: by default the tiny
    FLUX's own T5 (``tiny_flux_pipeline`` builds it with seed 1), so FLUX identities fit it."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel as Transformer

    torch.manual_seed(seed)
    transformer = Transformer(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=T5_WIDTH,
    )
    vae = AutoencoderKLLTXVideo(
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    return LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=tiny_t5_encoder(T5_WIDTH, t5_seed),
        tokenizer=t5_tokenizer(),
        transformer=transformer,
    )


def tiny_controlnet(pipe: Any, seed: int = 0) -> Any:
    """A ControlNet shaped for ``pipe``'s UNet (``ControlNetModel.from_unet``) whose output is not zero."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    # from_unet starts the output convolutions at zero (no effect yet); a trained ControlNet's are not
    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(conv.weight, std=0.1)
    return controlnet


def save_tiny(pipe: Any, folder: Path) -> Path:
    """Save a pipeline (or model) in diffusers layout and return its folder."""
    pipe.save_pretrained(str(folder))
    return folder


def tiny_unet3d(cross_attention_dim: int = 64, seed: int = 0) -> Any:
    """A tiny UNet3DConditionModel (text-to-video's denoiser); ``attention_head_dim`` is its head count."""
    import torch
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def tiny_t2v_pipeline(text_width: int = 64, seed: int = 0) -> Any:
    """A TextToVideoSDPipeline (ModelScope layout) whose text encoder has ``text_width`` dims."""
    from diffusers import TextToVideoSDPipeline

    return TextToVideoSDPipeline(
        unet=tiny_unet3d(text_width, seed),
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(text_width, seed),
        tokenizer=clip_tokenizer(),
        scheduler=tiny_scheduler(),
    )


def tiny_motion_adapter(seed: int = 0) -> Any:
    """An AnimateDiff MotionAdapter that fits ``tiny_unet()`` (channels (32, 64), one layer per block)."""
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    return MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=1,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=8,
        motion_max_seq_length=32,
        use_motion_mid_block=True,
    )


# jonathandinu/face-parsing's class names, in its order (CelebAMask-HQ's classes, numbered its own way)
FACE_PARSING_LABELS = (
    *("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear"),
    *("mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
)


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """A tiny random ViTModel and its ViTImageProcessor (224², as the paper's face encoder) in ``folder``."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=224,
        patch_size=16,
    )
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def save_tiny_face_parser(folder: Path, labels: tuple[str, ...] = FACE_PARSING_LABELS, seed: int = 3) -> Path:
    """A tiny random SegFormer with ``labels`` as its classes and its image processor (64²) in ``folder``.

    With the default seed its label map of a face photo has background, face classes and hair.
    """
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(seed)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    # a random head gives every pixel the same class; stronger weights give a varied map, hair included
    torch.nn.init.normal_(model.decode_head.classifier.weight, std=3.0)
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder
