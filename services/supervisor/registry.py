"""Where each service's class and config live, imported only when used."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    cls: str
    config_module: str
    config_cls: str

    def build(self, common, **overrides):
        svc_cls = getattr(importlib.import_module(self.module), self.cls)
        cfg_cls = getattr(importlib.import_module(self.config_module), self.config_cls)
        return svc_cls(cfg_cls(**overrides), common)


SPECS = {
    s.name: s for s in (
        ServiceSpec("probe", "services.probe.service", "ProbeService", "services.probe.config", "ProbeConfig"),
        ServiceSpec("enricher", "services.enricher.service", "EnricherService",
                    "services.enricher.config", "EnricherConfig"),
        ServiceSpec("alerter", "services.alerter.service", "AlerterService",
                    "services.alerter.config", "AlerterConfig"),
        ServiceSpec("store", "services.store.service", "StoreService", "services.store.config", "StoreConfig"),
        ServiceSpec("api", "services.api.service", "ApiService", "services.api.config", "ApiConfig"),
    )
}
