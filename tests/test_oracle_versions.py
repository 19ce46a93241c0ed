"""The README's test command must pass on a fresh machine with today's releases: every test
dependency is installed inside the range pinned in pyproject.toml's ``test`` extra (an oracle that
is missing would make its tests skip, one outside its range was never run by anyone), and every
known quirk names a package of that extra and a version range that exists inside it."""

from __future__ import annotations

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from lowbit.tools.oracle_versions import QUIRKS, Quirk, installed_version, oracle_report, oracle_ranges

RANGES = oracle_ranges()


def test_the_test_extra_is_read() -> None:
    # the ranges come from one place (pyproject.toml); a broken reader would make the checks below vacuous
    for name in ("ml-dtypes", "torchao", "compressed-tensors", "bitsandbytes", "transformers", "hqq", "optimum-quanto"):
        assert name in RANGES, f"{name} is not in the test extra"


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_test_dependency_is_installed_within_its_tested_range(name: str) -> None:
    req = RANGES[name]
    v = installed_version(name)
    assert v is not None, f"{name} (test extra: {req}) is not installed: pip install -e '.[test]'"
    assert req.specifier.contains(v, prereleases=True), \
        f"{name} {v} is outside the tested range {req.specifier}: run the suite with it, then widen the range"


@pytest.mark.parametrize("name", sorted(n for n, r in RANGES.items() if canonicalize_name(r.name) != "torch"))
def test_every_range_has_an_upper_bound(name: str) -> None:
    """No open-ended oracle: the next release must not reach CI before the suite has run with it
    (torch is the exception: the README installs the one version this machine allows)."""
    spec = RANGES[name].specifier
    assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{name}: {spec} has no upper bound"


@pytest.mark.parametrize("quirk", QUIRKS, ids=lambda q: q.package)
def test_quirks_name_versions_inside_the_tested_range(quirk: Quirk) -> None:
    name = canonicalize_name(quirk.package)
    assert name in RANGES, f"{quirk.package}: a quirk of a package that is not a test dependency"
    affected = SpecifierSet(quirk.affected)
    # some version inside the tested range has the quirk, and (for a per-version quirk) some does
    # not: else it is the oracle's behaviour, or dead. A machine-dependent quirk (probe) may cover
    # the whole range: its probe decides.
    probes = [Version(f"{a}.{b}.{c}") for a in range(0, 8) for b in range(0, 100) for c in (0, 1, 4)]
    inside = [v for v in probes if RANGES[name].specifier.contains(v)]
    assert any(affected.contains(v) for v in inside), f"{quirk.package}: affected {quirk.affected} vs tested {RANGES[name].specifier}"
    if quirk.probe is None:
        assert not all(affected.contains(v) for v in inside), \
            f"{quirk.package}: every tested version has it ({quirk.affected}): not a per-version quirk"


def test_present_follows_the_installed_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import lowbit.tools.oracle_versions as OV

    q = Quirk(package="ml_dtypes", affected="<0.7", what="-", found="-")
    monkeypatch.setattr(OV, "installed_version", lambda p: Version("0.6.0"))
    assert q.present()
    monkeypatch.setattr(OV, "installed_version", lambda p: Version("0.7.0"))
    assert not q.present()
    monkeypatch.setattr(OV, "installed_version", lambda p: None)
    assert not q.present()
    probed = Quirk(package="ml_dtypes", affected=">=0.5", what="-", found="-", probe=lambda: False)
    monkeypatch.setattr(OV, "installed_version", lambda p: Version("0.6.0"))
    assert not probed.present()


def test_the_header_names_every_oracle_and_flags_strays(monkeypatch: pytest.MonkeyPatch) -> None:
    import lowbit.tools.oracle_versions as OV

    lines = oracle_report()
    for name in RANGES:
        assert f"{name} " in lines[0]
    assert "[MISSING]" not in lines[0] and "[NOT IN" not in lines[0]
    monkeypatch.setattr(OV, "installed_version", lambda p: Version("99.0") if "torchao" in p else None)
    stray = oracle_report()[0]
    assert "torchao 99.0 [NOT IN" in stray and "ml-dtypes - [MISSING]" in stray
