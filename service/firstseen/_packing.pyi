# The compiled packing's interface (_packing.pyx); FirstSeenStore._pack_each is its reference.
from collections.abc import Sequence

from service.claims.schemas import ClaimChange, ClaimEffect

def pack_codes(
    codes: Sequence[str], bucket_bits: int, slot_groups: int
) -> tuple[list[int], bytes]: ...
def pack_effects(
    effects: Sequence[ClaimEffect], forget: Sequence[str], bucket_bits: int, slot_groups: int
) -> tuple[list[int], bytes]: ...
def pack_changes(
    changes: Sequence[ClaimChange], details: Sequence[bytes], bucket_bits: int,
    slot_groups: int,
) -> tuple[list[int], bytes]: ...
