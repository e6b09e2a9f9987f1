"""Networks: the MATEBIT generator, its discriminator, and the correspondence they rest on."""

from matebit.models.discriminator import MultiscaleDiscriminator
from matebit.models.generator import GeneratorOutput, InputSizeError, MATEBITGenerator

__all__ = ["MATEBITGenerator", "GeneratorOutput", "InputSizeError", "MultiscaleDiscriminator"]
