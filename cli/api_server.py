"""`tracegate api`: uvicorn running the app in `TRACEGATE_API_WORKERS` processes, with one
Prometheus multiprocess directory for the run so a scrape of any worker covers all of them,
and logging left to the app factory (each worker configures its own JSON logging)."""

from __future__ import annotations

from service.kit.metrics_directory import metrics_directory
from service.settings import Settings


def serve_api(settings: Settings) -> int:
    # Before uvicorn (and with it prometheus_client) is imported: the workers inherit the
    # directory through the environment, and the library picks its value store on import.
    with metrics_directory():
        import uvicorn

        uvicorn.run(
            "service.api.app:production_app", factory=True, workers=settings.api_workers,
            host=settings.api_host, port=settings.api_port,
            # Our JSON handler, not uvicorn's dictConfig; our access log (service/api/
            # access_log.py), not uvicorn's, which would log query strings.
            log_config=None, access_log=False,
            timeout_graceful_shutdown=5, timeout_keep_alive=settings.api_keep_alive_s,
        )
    return 0
