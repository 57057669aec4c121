"""Jurisdiction: how a call is classified for pricing, from NPA-NXX (LERG-like) data.

The rules, in order:

1. dialed number outside the NANP (country code not 1)        -> international
2. dialed NPA is toll-free (800, 833, 844, 855, 866, 877, 888) -> toll_free
3. calling number missing, unreadable, outside the NANP, or
   itself toll-free                                            -> indeterminate
4. NPA-NXX of the caller or of the destination unknown         -> indeterminate
5. different state/province (a US<->Canada call included)      -> interstate
6. same state and same rate centre                             -> local (priced as intrastate)
7. same state                                                  -> intrastate

The destination is the LRN when the number is ported: a ported number is homed where its LRN
is, and that is where the terminating carrier charges for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from routing_engine.domain.numbers import E164
from routing_engine.domain.snapshot import Jurisdiction, Location

TOLL_FREE_NPAS = frozenset({"800", "833", "844", "855", "866", "877", "888"})


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Jurisdiction
    why: str
    origin: Location | None = None
    destination: Location | None = None

    def explain(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind.value, "why": self.why}
        for name, loc in (("origin", self.origin), ("destination", self.destination)):
            if loc is not None:
                out[name] = {"state": loc.state, "lata": loc.lata, "rate_center": loc.rate_center}
        return out


def is_toll_free(number: E164) -> bool:
    return number.is_nanp and number.digits[1:4] in TOLL_FREE_NPAS


def classify(
    dialed: E164, caller: E164 | None, destination_digits: str, npanxx: Mapping[str, Location]
) -> Classification:
    """Classify a call. ``destination_digits`` is the LRN (E.164 digits) if ported, else dialed."""
    if not dialed.is_nanp:
        return Classification(Jurisdiction.INTERNATIONAL, "destination outside the NANP")
    if is_toll_free(dialed):
        return Classification(Jurisdiction.TOLL_FREE, "toll-free NPA")
    if caller is None:
        return Classification(Jurisdiction.INDETERMINATE, "calling number missing or unreadable")
    if not caller.is_nanp:
        return Classification(Jurisdiction.INDETERMINATE, "calling number outside the NANP")
    if is_toll_free(caller):
        return Classification(Jurisdiction.INDETERMINATE, "calling number is toll-free")
    origin = npanxx.get(caller.digits[1:7])
    destination = npanxx.get(destination_digits[1:7])
    if origin is None:
        return Classification(Jurisdiction.INDETERMINATE, f"NPA-NXX {caller.digits[1:7]} unknown",
                              destination=destination)
    if destination is None:
        return Classification(Jurisdiction.INDETERMINATE,
                              f"NPA-NXX {destination_digits[1:7]} unknown", origin=origin)
    if (origin.country, origin.state) != (destination.country, destination.state):
        return Classification(Jurisdiction.INTERSTATE, f"{origin.state} -> {destination.state}",
                              origin, destination)
    if origin.rate_center and origin.rate_center == destination.rate_center:
        return Classification(Jurisdiction.LOCAL, f"same rate centre {origin.rate_center}",
                              origin, destination)
    return Classification(Jurisdiction.INTRASTATE, f"within {origin.state}", origin, destination)
