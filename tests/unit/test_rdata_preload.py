"""dnspython's record types are loaded when dnsd's application is imported, so a later failed import cannot
turn a type into generic rdata for the rest of the process."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

import dnsd.app  # noqa: F401  (the import is what loads the types)

# Types dnsd and its tests rarely or never meet, so nothing else has loaded them before this test.
TYPES = ["AAAA", "AMTRELAY", "HIP", "ZONEMD", "CSYNC", "TLSA"]


@pytest.mark.parametrize("name", TYPES)
def test_types_stay_parsable_when_imports_fail(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def no_imports(module: str) -> None:
        raise ImportError(f"[Errno 24] Too many open files: {module}")

    monkeypatch.setattr(dns.rdata, "import_module", no_imports)
    cls = dns.rdata.get_rdata_class(dns.rdataclass.IN, dns.rdatatype.from_text(name))
    assert cls is not dns.rdata.GenericRdata, f"{name} would be generic rdata after a failed import"
