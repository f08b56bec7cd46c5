"""Family adapters: the family table names one per row, a model of no row gets the one that fits its
layout, and what train, control, video and 3d ask comes from the adapter."""

from __future__ import annotations

import pytest

from sid.errors import BadInput
from sid.families import FAMILIES, SDXL


def test_every_family_row_names_a_registered_adapter() -> None:
    from sid.adapters import ADAPTERS, DDPMAdapter, FluxAdapter, SDXLAdapter

    assert all(f.adapter in ADAPTERS for f in FAMILIES)
    assert {f.key: ADAPTERS[f.adapter] for f in FAMILIES} == {
        "sd1": DDPMAdapter,
        "sd2": DDPMAdapter,
        "sdxl": SDXLAdapter,
        "flux": FluxAdapter,
    }
    assert SDXL.adapter == "sdxl"


def test_a_model_of_no_row_gets_the_adapter_its_layout_fits() -> None:
    """The tiny models' widths (32; 32 + 64) are no row of the table: ``fits`` decides, and a pipeline no
    adapter fits (text-to-video) is refused with the families sid knows."""
    from sid.adapters import ADAPTERS, DDPMAdapter, SDXLAdapter, adapter_for, fits_any
    from sid.families import family_of_pipeline
    from sid.pipelines import check_text_to_image, native_size
    from sid.testing import tiny_sd_pipeline, tiny_sdxl_pipeline, tiny_t2v_pipeline

    sd, xl, t2v = tiny_sd_pipeline(), tiny_sdxl_pipeline(), tiny_t2v_pipeline()
    assert family_of_pipeline(sd).adapter == family_of_pipeline(xl).adapter == ""
    assert adapter_for(sd) is DDPMAdapter and adapter_for(xl) is SDXLAdapter
    assert [key for key, cls in ADAPTERS.items() if cls.fits(xl)] == ["sdxl"]  # one layout, one adapter
    assert [key for key, cls in ADAPTERS.items() if cls.fits(sd)] == ["sd"]
    assert native_size(sd) == native_size(xl) == (64, 64)  # the UNet's 32 latents times the VAE's 2
    assert not fits_any(t2v)
    xl.text_encoder = None  # an SDXL refiner's layout: no first text encoder to put an identity in
    assert not fits_any(xl)
    with pytest.raises(BadInput) as caught:
        check_text_to_image(t2v, "t2v")
    assert "SD 1.x, SD 2.x, SDXL, FLUX.1" in caught.value.hint
    with pytest.raises(BadInput):
        adapter_for(t2v)


def test_pipeline_level_facts_come_from_the_adapter() -> None:
    from sid.adapters import DDPMAdapter, SDXLAdapter

    assert DDPMAdapter.threed and not SDXLAdapter.threed
    assert DDPMAdapter.controlnet_pipeline == "StableDiffusionControlNetPipeline"
    assert SDXLAdapter.controlnet_pipeline == "StableDiffusionXLControlNetPipeline"
