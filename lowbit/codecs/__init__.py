"""Built-in codecs, one module per family. Importing this package registers them all."""

from . import minifloat  # noqa: F401
from . import gguf_legacy  # noqa: F401
from . import gguf_kquants  # noqa: F401
from . import gguf_iq1  # noqa: F401
from . import gguf_iq2  # noqa: F401
from . import gguf_iq3  # noqa: F401
from . import turboquant  # noqa: F401
from . import bfp  # noqa: F401
from . import octopus  # noqa: F401
from . import bnb, mx, nvfp4  # noqa: F401
from . import int as _int  # noqa: F401,E402
from . import nonuniform  # noqa: F401,E402
from . import wrappers  # noqa: F401,E402
from . import sliceable  # noqa: F401,E402
from . import bitmod  # noqa: F401,E402
from . import dynamic8  # noqa: F401,E402
from . import qjl  # noqa: F401,E402
from . import rotated  # noqa: F401,E402
