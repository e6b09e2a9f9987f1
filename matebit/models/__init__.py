"""Networks: the MATEBIT generator, its discriminator, and the correspondence they rest on."""

from matebit.models.discriminator import MultiscaleDiscriminator
from matebit.models.generator import BLOCKS, CorrespondenceProbe, GeneratorOutput, InputSizeError, MATEBITGenerator

__all__ = ["BLOCKS", "MATEBITGenerator", "CorrespondenceProbe", "GeneratorOutput", "InputSizeError",
           "MultiscaleDiscriminator"]
