"""Which versions of the test oracles the suite supports, and which known quirks each version has.

The oracles (ml_dtypes, torchao, compressed-tensors, bitsandbytes, hqq, optimum-quanto, transformers,
zarr, numcodecs, gguf, triton's interpreter) are other people's packages, and their next release can
change the very behaviour a test compares against. Two rules keep the README's test command green
on a fresh machine (README.md, "Testing"):

* every test dependency is pinned in ``pyproject.toml``'s ``test`` extra to the range the suite has
  been run against (``>= oldest tested, < next untested minor``), so a new release is never
  installed before someone has run the suite with it and widened the range;
* a behaviour that differs between supported versions is a :class:`Quirk` below, named with the
  versions that have it. A test asserts the quirk only where the installed version has it, and
  asserts plain agreement everywhere else, so it fails both when a listed version loses the quirk
  and when an unlisted one grows it.

The ranges are read from the installed package's metadata (or ``pyproject.toml`` in a source tree):
they are written once, in ``pyproject.toml``.

    >>> from lowbit.tools.oracle_versions import ML_DTYPES_E8M0_SUBNORMALS, oracle_ranges
    >>> str(oracle_ranges()["ml-dtypes"].specifier) != ""
    True
    >>> isinstance(ML_DTYPES_E8M0_SUBNORMALS.present(), bool)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = ["Quirk", "QUIRKS", "ML_DTYPES_E8M0_SUBNORMALS", "BNB_FP4_CODE8_SIGN", "GGUF_PY_Q8_1_SIZE", "installed_version", "oracle_ranges",
           "oracle_report"]

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def installed_version(package: str) -> Version | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return Version(metadata.version(package))
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Quirk:
    """A behaviour of some versions of an oracle package that lowbit deliberately does not copy.

    ``affected`` is a PEP 440 specifier of the versions that have it (checked by a real run of
    each version; see ``found``)."""

    package: str
    affected: str
    what: str
    found: str
    #: for a behaviour that depends on the machine rather than the version (a CPU-dispatched
    #: kernel): asks the installed oracle itself, and the quirk is present only where it says so
    probe: Callable[[], bool] | None = None

    def present(self) -> bool:
        """True when the installed version of ``package`` is one of the affected versions (and,
        for a machine-dependent quirk, the oracle on this machine shows it)."""
        v = installed_version(self.package)
        if v is None or not SpecifierSet(self.affected).contains(v, prereleases=True):
            return False
        return self.probe() if self.probe is not None else True


ML_DTYPES_E8M0_SUBNORMALS = Quirk(
    package="ml_dtypes",
    affected="<0.7",
    what="float32 subnormal inputs round to float8_e8m0fnu one binade too high "
         "(1.27*2**-127 -> 2**-126 instead of 2**-127)",
    found="49 994 of 200 000 random positive float32 subnormals differ from the nearest-value "
          "reference on ml_dtypes 0.5.0, 0.5.4 and 0.6.0; none on 0.7.0 (2026-12-07)",
)


@functools.cache
def _bnb_fp4_code8_is_positive_zero() -> bool:
    """Decode FP4 code 8 (sign bit, zero magnitude) with bitsandbytes' own CPU dequantize_4bit."""
    import logging
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # its optional-kernel notices
        import bitsandbytes.functional as F
    st = F.QuantState(absmax=torch.ones(1), shape=torch.Size([1, 64]), code=None, blocksize=64,
                      quant_type="fp4", dtype=torch.float32)
    y = F.dequantize_4bit(torch.full((32, 1), 0x88, dtype=torch.uint8), st)
    return not bool(torch.signbit(y[0, 0]))


BNB_FP4_CODE8_SIGN = Quirk(
    package="bitsandbytes",
    affected=">=0.50",
    what="FP4 code 8 (the sign bit over a zero magnitude) decodes to +0.0, not -0.0",
    found="bitsandbytes' CPU dequantize_4bit: its Python code table and its AVX-512 kernel (chosen at run "
          "time on CPUs with AVX-512F) hold +0.0 for code 8; the suite passed with -0.0 on earlier "
          "machines (2026-11-23, same 0.50.2 wheel). Every other code and every byte agree.",
    probe=_bnb_fp4_code8_is_positive_zero,
)



def _gguf_py_q8_1_is_40_bytes() -> bool:
    """Ask gguf-py's own size table for Q8_1."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType.Q8_1] == (32, 40)


GGUF_PY_Q8_1_SIZE = Quirk(
    package="gguf",
    affected=">=0.19",
    what="GGML_QUANT_SIZES gives Q8_1 40 bytes per 32 elements (float32 d and s); ggml's block_q8_1 "
         "holds them as float16: 36 bytes",
    found="libggml-base from the llama-cpp-python 0.3.36 sdist: ggml_get_type_traits(9) is q8_1, 32, 36; "
          "gguf 0.19.0 says (32, 40) (2026-12-07). lowbit takes no sizes from that table; the harness "
          "check against it skips Q8_1 only while gguf-py still says 40.",
    probe=_gguf_py_q8_1_is_40_bytes,
)

QUIRKS: tuple[Quirk, ...] = (ML_DTYPES_E8M0_SUBNORMALS, BNB_FP4_CODE8_SIGN, GGUF_PY_Q8_1_SIZE)


def _test_requirements() -> list[Requirement]:
    """The ``test`` extra's requirements: from the installed metadata, else from pyproject.toml."""
    try:
        reqs = [Requirement(r) for r in metadata.requires("lowbit") or []]
        reqs = [r for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "test"})]
    except metadata.PackageNotFoundError:
        reqs = []
    if not reqs and _PYPROJECT.is_file():
        import tomllib

        with open(_PYPROJECT, "rb") as f:
            extras = tomllib.load(f)["project"]["optional-dependencies"]
        reqs = [Requirement(r) for r in extras["test"]]
    return reqs


def oracle_ranges() -> dict[str, Requirement]:
    """``{canonical package name: requirement}`` for every test dependency (pyproject's ``test`` extra)."""
    return {canonicalize_name(r.name): r for r in _test_requirements()}


def oracle_report() -> list[str]:
    """Lines for the pytest header: each test dependency's installed version (flagged when missing or
    outside its tested range) and the quirks the installed versions have."""
    parts = []
    for name, req in sorted(oracle_ranges().items()):
        v = installed_version(name)
        mark = "" if v is not None and req.specifier.contains(v, prereleases=True) else \
            f" [NOT IN {req.specifier or 'any'}]" if v is not None else " [MISSING]"
        parts.append(f"{name} {v if v is not None else '-'}{mark}")
    lines = ["test dependencies (ranges: pyproject.toml [test]): " + ", ".join(parts)]
    active = [f"{q.package}{q.affected}: {q.what}" for q in QUIRKS if q.present()]
    lines.append("oracle quirks in effect: " + ("; ".join(active) if active else "none"))
    return lines
