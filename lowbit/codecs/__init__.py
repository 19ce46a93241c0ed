"""Built-in codecs, one module per family. Importing this package registers them all."""

from . import minifloat  # noqa: F401
from . import bnb, mx, nvfp4  # noqa: F401
