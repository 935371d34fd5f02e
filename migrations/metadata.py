"""Every model, imported once so `Base.metadata` is complete for Alembic."""

from __future__ import annotations

from service.auth import models as auth_models
from service.flags import models as flag_models
from service.institutions import models as institution_models
from service.kit.database import Base
from service.records import models as record_models

MODEL_MODULES = (auth_models, flag_models, institution_models, record_models)
target_metadata = Base.metadata
