"""Every model, imported once so `Base.metadata` is complete for Alembic."""

from __future__ import annotations

from service.auth import models as auth_models
from service.drugs import models as drug_models
from service.flags import models as flag_models
from service.institutions import models as institution_models
from service.kit.database import Base
from service.records import models as record_models

MODEL_MODULES = (auth_models, drug_models, flag_models, institution_models, record_models)
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Partitions (code_events_y2025m04, code_claims_p03, ...) are created by migrations but
    are not models; leave them out of autogenerate comparisons."""
    if type_ == "table":
        return name in target_metadata.tables
    return True
