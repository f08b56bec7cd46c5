"""An identity as a 3D asset: a radiance field optimised by score distillation, exported as a mesh.

Modules: ``cameras`` (orbits, view labels, rays), ``field`` (feature grids + MLP + head prior),
``render`` (volume rendering and shading), ``sds`` (view prompts, SDS/ISM gradients, the frozen
model), ``export`` (marching cubes, turntable video), ``generate`` (the run). See docs/3d.md.
"""

from sid.threed.generate import ThreeDConfig, ThreeDResult, check_inputs, generate_3d

__all__ = ["ThreeDConfig", "ThreeDResult", "check_inputs", "generate_3d"]
