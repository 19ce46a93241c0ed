"""Built-in codecs, one module per family. Importing this package registers them all."""

from . import minifloat  # noqa: F401
from . import gguf_legacy  # noqa: F401
from . import gguf_kquants  # noqa: F401
from . import turboquant  # noqa: F401
from . import bfp  # noqa: F401
from . import octopus  # noqa: F401
from . import bnb, mx, nvfp4  # noqa: F401
